"""Keeping tokens out of the log when aiohttp reports a request it could not handle.

aiohttp logs a request it rejects (a malformed request line, a header it refuses) with
the raw bytes it saw, and those may carry ``?token=`` or an ``Authorization`` header.
The filter rewrites such records, traceback included, before any handler sees them.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

from aiohttp.http_exceptions import BadHttpMessage

# The loggers through which aiohttp's server side reports requests.
SERVER_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.websocket")
REDACTED = "<redacted>"
# A value runs to the end of its parameter, header or quoted text; "," and ";" may be
# part of a token. An Authorization value is cut with its scheme, whichever it is
# ("Basic" carries a password too).
_VALUE = r"[^\s&'\"\\]+"
_SECRET = re.compile(
    rf"(?i)(token(?:=|%3D)|bearer(?:\s|%20|\+)+){_VALUE}"
    rf"|(authorization:\s*){_VALUE}(?:[ \t]+{_VALUE})?"
)
# A query parameter whose name is spelt with percent escapes (`%74oken=`): aiohttp
# decodes the name and takes the value as the token all the same.
_ESCAPED_PARAM = re.compile(
    rf"((?:[\w.~-]|%[0-9A-Fa-f]{{2}})*%[0-9A-Fa-f]{{2}}[\w.~%-]*)(=|%3[Dd]){_VALUE}"
)
_formatter = logging.Formatter()


def redact(text: str) -> str:
    text = _SECRET.sub(lambda m: (m[1] or m[2]) + REDACTED, text)
    return _ESCAPED_PARAM.sub(_redact_escaped, text)


def _redact_escaped(match: re.Match[str]) -> str:
    if unquote(match[1]).lower() == "token":
        return match[1] + match[2] + REDACTED
    return match[0]


# How much of what aiohttp says about a malformed request is kept (it quotes the line).
MAX_REASON = 200
MALFORMED = "local server: refused a malformed request from %s: %s"


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BadHttpMessage):
            _as_refusal(record, error)
            return True
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


def _as_refusal(record: logging.LogRecord, error: BadHttpMessage) -> None:
    """A request the peer got wrong, told in one line under one template.

    aiohttp logs it as an ERROR with a traceback quoting the bad bytes: any neighbour
    could then write a different line per request into the journal, past the
    repeat guard, until journald's rate limit silenced the gateway's own messages.
    """
    peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
    reason = redact(" ".join(str(error).split()))[:MAX_REASON]
    record.msg = MALFORMED
    record.args = (str(peer), reason)
    if record.levelno > logging.WARNING:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    record.exc_info = None
    record.exc_text = None


def redact_server_logs() -> None:
    """Install the filter on aiohttp's server loggers (once)."""
    for name in SERVER_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in target.filters):
            target.addFilter(RedactTokens())
