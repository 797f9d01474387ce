"""The stream's bytes on the wire: readings messages and the WebSocket frames around them.

A ``readings`` message is built from the stored payload bytes as they are (no decoding
and re-encoding), and framed by hand once per commit so that the same frame bytes can be
written to every idle client's socket.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.reading import StoredReading, join_payloads

# Readings per message: a large commit (a backlog after a stall) is split so that
# messages stay well under clients' size limits (aiohttp's default is 4 MiB).
MESSAGE_READINGS = 1000
PONG = b'{"type":"pong"}'


def readings_message(readings: Sequence[StoredReading]) -> bytes:
    return b'{"type":"readings","readings":' + join_payloads([r.payload for r in readings]) + b"}"


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame (RFC 6455, 5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def json_message(obj: dict[str, object]) -> bytes:
    """A small control message (hello, gap, error) as compact JSON."""
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class SharedMessage:
    """Readings of one commit for one device filter, and their message, shared by clients."""

    readings: Sequence[StoredReading]
    message: bytes
    # The message framed once for every client (None when frames are compressed per client).
    frame: bytes | None
    # The first and last seq, as plain fields: read once per client per commit.
    first: int
    last: int


def commit_messages(readings: Sequence[StoredReading], framed: bool) -> list[SharedMessage]:
    """A commit batch as messages of at most ``MESSAGE_READINGS`` readings each."""
    out = []
    for start in range(0, len(readings), MESSAGE_READINGS):
        part = readings[start : start + MESSAGE_READINGS]
        message = readings_message(part)
        frame = text_frame(message) if framed else None
        out.append(SharedMessage(part, message, frame, part[0].seq, part[-1].seq))
    return out
