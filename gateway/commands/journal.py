"""Request ids already answered, and their results, kept across restarts.

A file of JSON lines in the data directory (``commands.jsonl``), not a table in
the reading log's database: a command is rare next to readings, and appending
one fsynced line here never delays the store's commits. Each answer is one
appended line, fsynced before the result is sent (after it, for the commands that
change nothing: see ``gateway.commands.router``). A torn last
line (power cut mid-write) is skipped when loading. When the file holds twice
as many lines as are remembered, it is rewritten with the live ones only, into
a temporary file that is fsynced and renamed over the old one (then the
directory is fsynced), so a crash leaves either the old file or the new.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "commands.jsonl"


class AnswerJournal:
    """At most ``count`` answers, each for ``keep`` seconds, oldest forgotten first."""

    def __init__(
        self, path: Path, keep: float, count: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.keep = keep
        self.count = count
        self._clock = clock
        self._answers: OrderedDict[str, tuple[float, dict[str, object]]] = OrderedDict()
        self._lines = 0

    def load(self) -> None:
        """Read the file (blocking). Lines that cannot be read are skipped and counted."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return
        skipped = 0
        for line in text.splitlines():
            entry = _entry(line)
            if entry is None:
                skipped += 1
                continue
            request_id, at, body = entry
            self._answers.pop(request_id, None)
            self._answers[request_id] = (at, body)
            self._lines += 1
        if skipped:
            log.warning("%s: %d unreadable line(s) skipped", self.path, skipped)
        self._forget_old()

    def get(self, request_id: str) -> dict[str, object] | None:
        self._forget_old()
        found = self._answers.get(request_id)
        return None if found is None else found[1]

    def __len__(self) -> int:
        return len(self._answers)

    def add(self, request_id: str, body: dict[str, object]) -> None:
        """Remember ``body`` as the answer to ``request_id`` (blocking: appends and fsyncs)."""
        self.write(request_id, self.remember(request_id, body), body)

    def remember(self, request_id: str, body: dict[str, object]) -> float:
        """Remember ``body`` in memory only (``get`` finds it at once); returns its time,
        for ``write``."""
        at = self._clock()
        self._answers.pop(request_id, None)
        self._answers[request_id] = (at, body)
        self._forget_old()
        return at

    def write(self, request_id: str, at: float, body: dict[str, object]) -> None:
        """Append a remembered answer to the file (blocking: appends and fsyncs)."""
        line = json.dumps({"id": request_id, "at": at, "body": body}, separators=(",", ":"))
        if self._lines >= 2 * self.count:
            self._rewrite()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as file:
            file.write(line.encode() + b"\n")
            file.flush()
            os.fsync(file.fileno())
        self._lines += 1

    def _forget_old(self) -> None:
        limit = self._clock() - self.keep
        while self._answers:
            oldest_id, (at, _) = next(iter(self._answers.items()))
            if at >= limit and len(self._answers) <= self.count:
                break
            del self._answers[oldest_id]

    def _rewrite(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        # A copy: the event loop may remember another answer meanwhile.
        live = list(self._answers.items())
        with temporary.open("wb") as file:
            for request_id, (at, body) in live:
                entry = {"id": request_id, "at": at, "body": body}
                file.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._lines = len(live)


def _entry(line: bytes) -> tuple[str, float, dict[str, object]] | None:
    try:
        entry = json.loads(line)
        request_id, at, body = entry["id"], float(entry["at"]), entry["body"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(request_id, str) or not isinstance(body, dict):
        return None
    return request_id, at, body
