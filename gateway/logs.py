"""Logging to stdout, one line per event, with a guard against floods.

Under systemd, stdout goes to the journal, which adds its own timestamps and
reads the ``<N>`` priority prefix; elsewhere each line starts with an ISO
timestamp. A device that sends garbage ten times a second must not fill the SD
card with the same warning: ``RepeatFilter`` logs a repeated message once per
window and then says how often it came.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

# Seconds during which the same message from the same logger is logged once.
REPEAT_WINDOW = 10.0

# Syslog priorities journald reads from a "<N>" line prefix.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

# The attribute that marks a summary record, so the filter lets it through.
_SUMMARY = "repeat_summary"

_PLACEHOLDER = re.compile(r"%(?:\(\w+\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")


def setup_logging(level: str, *, repeat_window: float = REPEAT_WINDOW) -> logging.Handler:
    """Send every log record of ``level`` and above to stdout; return the handler.

    Calling it again replaces the handler it installed before.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _GatewayHandler(sys.stdout)
    handler.setFormatter(LineFormatter(journal=stream_is_journal(sys.stdout)))
    handler.addFilter(RepeatFilter(handler.handle, window=repeat_window))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def stream_is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journal connection systemd gave this service.

    systemd sets JOURNAL_STREAM to the device and inode of that connection; a
    child whose output was redirected elsewhere inherits the variable but not the
    connection, so comparing both is what tells them apart.
    """
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


class _GatewayHandler(logging.StreamHandler[TextIO]):
    """The handler ``setup_logging`` owns (and replaces when called again)."""

    def close(self) -> None:
        for guard in self.filters:
            if isinstance(guard, RepeatFilter):
                guard.flush()
        super().close()


class LineFormatter(logging.Formatter):
    """``LEVEL logger: message`` on one line, with a timestamp unless journald adds one."""

    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        # Messages carry text from devices and peers; escaping line breaks keeps
        # one event on one line and stops such text from forging log lines.
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"
        when = datetime.fromtimestamp(record.created).astimezone()
        return f"{when.isoformat(timespec='milliseconds')} {text}"


@dataclass(slots=True)
class _Window:
    ends: float
    repeats: int = 0
    last: logging.LogRecord | None = None


class RepeatFilter(logging.Filter):
    """Log a (logger, message template) once per window, then how often it repeated.

    Each message template (and subject, see ``_event``) has its own window, so two
    devices flooding at once are both summarised. The summary goes out through
    ``emit`` when the window ends, from a timer thread if nothing else is logged
    by then. Messages must use
    %-style arguments (``log.warning("bad line %r", line)``) for their repeats to be
    recognised as the same. A template without words of its own (``"%s: %s"``)
    says nothing about the event, so such messages are compared as written.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        window: float = REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._emit = emit
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        # Insertion order is window start order, so expired windows are at the front.
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._timer: threading.Timer | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY, False):
            return True
        key = (record.name, record.levelno, _event(record))
        with self._lock:
            now = self._clock()
            due = self._expire(now)
            window = self._windows.get(key)
            if window is None:
                self._windows[key] = _Window(ends=now + self._window)
                passed = True
            else:
                window.repeats += 1
                window.last = record
                self._schedule(now)
                passed = False
        self._send(due)
        return passed

    def flush(self) -> None:
        """Send every pending summary now (at shutdown)."""
        with self._lock:
            due = [w for w in self._windows.values() if w.repeats]
            self._windows.clear()
            self._cancel_timer()
        self._send(due)

    def _expire(self, now: float) -> list[_Window]:
        due = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if window.ends > now:
                break
            del self._windows[key]
            if window.repeats:
                due.append(window)
        return due

    def _schedule(self, now: float) -> None:
        if self._timer is not None:
            return
        pending = next((w for w in self._windows.values() if w.repeats), None)
        if pending is None:
            return
        self._timer = threading.Timer(max(pending.ends - now, 0.0), self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            now = self._clock()
            due = self._expire(now)
            self._schedule(now)
        self._send(due)

    def _send(self, due: list[_Window]) -> None:
        for window in due:
            last = window.last
            if last is None:
                continue
            summary = logging.makeLogRecord(
                {
                    "name": last.name,
                    "levelno": last.levelno,
                    "levelname": last.levelname,
                    "msg": "%s (repeated %d %s in %gs)",
                    "args": (
                        last.getMessage(),
                        window.repeats,
                        "time" if window.repeats == 1 else "times",
                        self._window,
                    ),
                    _SUMMARY: True,
                }
            )
            self._emit(summary)


def _event(record: logging.LogRecord) -> str:
    """What makes two records "the same message": the template, if it has words.

    A template that starts with ``%s:`` names its subject there (a device or an
    uplink): each subject gets its own window, so one device's flood never hides
    another device's news.
    """
    template = record.msg
    if isinstance(template, str) and _has_words(template):
        if template.startswith("%s:") and isinstance(record.args, tuple) and record.args:
            return f"{record.args[0]}\0{template}"
        return template
    return record.getMessage()


@functools.lru_cache(maxsize=1024)
def _has_words(template: str) -> bool:
    return any(c.isalpha() for c in _PLACEHOLDER.sub("", template))
