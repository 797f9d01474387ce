"""Keeping tokens out of the log when aiohttp reports a request it could not handle.

aiohttp logs a request it rejects (a malformed request line, a header it refuses) with
the raw bytes it saw, and those may carry ``?token=`` or an ``Authorization`` header.
The filter rewrites such records, traceback included, before any handler sees them.
"""

from __future__ import annotations

import logging
import re

# The loggers through which aiohttp's server side reports requests.
SERVER_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.websocket")
REDACTED = "<redacted>"
_SECRET = re.compile(
    r"(?i)(token(?:=|%3D)|authorization:\s*(?:bearer\s+)?|bearer(?:\s|%20|\+)+)"
    r"[^\s&'\"\\,;]+"
)
_formatter = logging.Formatter()


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: m[1] + REDACTED, text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + _formatter.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        record.msg = redact(text)
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def redact_server_logs() -> None:
    """Install the filter on aiohttp's server loggers (once)."""
    for name in SERVER_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in target.filters):
            target.addFilter(RedactTokens())
