"""The WebSocket uplink's wire protocol, version 1: what both ends send and how they close.

Pure code, no I/O; the uplink (gateway/uplinks/websocket.py) and the reference ingest
server (gateway/cloud/ingest.py) share it. docs/websocket-uplink.md is the same
protocol in prose, for whoever builds another server.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from yarl import URL

from gateway.reading import StoredReading, join_payloads

SUBPROTOCOL = "edge-gateway.v1"  # Sec-WebSocket-Protocol
VERSION = 1

# The gateway accepts server messages up to this size (acks and errors are small).
MAX_SERVER_MESSAGE = 64 * 1024


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses, and what the gateway does after each."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server stops: reconnect soon
    TOO_BIG = 1009  # a message above the server's limit
    SERVER_ERROR = 1011  # anything unexpected: reconnect with backoff
    BAD_MESSAGE = 4400  # not JSON, unknown type, bad field, batch out of order
    UNAUTHORIZED = 4401  # the token or certificate is not accepted (after the upgrade)
    FORBIDDEN = 4403  # this token may not send for this gateway id
    UNSUPPORTED_VERSION = 4426  # the hello's version is not one the server speaks
    STORAGE_FAILED = 4500  # the database failed; nothing of the batch was acknowledged


# Codes that will not heal by reconnecting at once: the gateway waits near its cap.
REJECTING = frozenset(
    {
        CloseCode.TOO_BIG,
        CloseCode.BAD_MESSAGE,
        CloseCode.UNAUTHORIZED,
        CloseCode.FORBIDDEN,
        CloseCode.UNSUPPORTED_VERSION,
    }
)


class ProtocolError(ValueError):
    """A message that breaks the protocol; carries the close code that answers it."""

    def __init__(self, message: str, code: CloseCode = CloseCode.BAD_MESSAGE) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parsed = URL(url)
        if parsed.scheme not in ("ws", "wss"):
            raise ValueError(f"unsupported scheme in {url!r}: use ws or wss")
        if not parsed.host:
            raise ValueError(f"no host in {url!r}")
        return cls(url, parsed.scheme == "wss")


def _compact(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


# The hello's ``lane``: which of a gateway's streams a connection is. A priority stream
# carries only high-priority readings, a normal one the others; both are contiguous.
LANES = ("normal", "priority")


def hello(gateway: str, acked_seq: int, lane: str = "normal") -> str:
    return _compact(
        {
            "type": "hello",
            "version": VERSION,
            "gateway": gateway,
            "acked_seq": acked_seq,
            "lane": lane,
        }
    )


def welcome(max_message_bytes: int, max_in_flight: int) -> str:
    return _compact(
        {
            "type": "welcome",
            "version": VERSION,
            "max_message_bytes": max_message_bytes,
            "max_in_flight": max_in_flight,
        }
    )


def ack(seq: int) -> str:
    return _compact({"type": "ack", "seq": seq})


def error(code: CloseCode, message: str) -> str:
    return _compact({"type": "error", "code": int(code), "message": message})


def batch_frame(
    gateway: str, first_seq: int, last_seq: int, readings: Sequence[StoredReading]
) -> bytes:
    """A batch message, built around the readings' stored bytes (never re-encoded)."""
    name = json.dumps(gateway, ensure_ascii=False)
    head = f'{{"type":"batch","gateway":{name},"first_seq":{first_seq},"last_seq":{last_seq}'
    head += ',"readings":'
    return head.encode() + join_payloads([r.payload for r in readings]) + b"}"


def parse(data: str | bytes) -> dict[str, Any]:
    """A message as a JSON object with a string ``type``; ``ProtocolError`` otherwise."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(f"not JSON: {err}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError('not a JSON object with a string "type"')
    return message


def seq_field(message: dict[str, Any], key: str, minimum: int = 0) -> int:
    value = message.get(key)
    if type(value) is not int or value < minimum:
        raise ProtocolError(f"{key}: an integer from {minimum}")
    return value


@dataclass(frozen=True, slots=True)
class BatchHead:
    """What a server checks of a batch before landing its readings."""

    gateway: str
    first_seq: int
    last_seq: int
    readings: list[Any]

    @classmethod
    def of(cls, message: dict[str, Any]) -> BatchHead:
        gateway = message.get("gateway")
        if not isinstance(gateway, str) or not gateway:
            raise ProtocolError("gateway: a non-empty string")
        first = seq_field(message, "first_seq", 1)
        last = seq_field(message, "last_seq", first)
        readings = message.get("readings")
        if not isinstance(readings, list):
            raise ProtocolError("readings: a JSON array")
        previous = first - 1
        for index, reading in enumerate(readings):
            seq = reading.get("seq") if isinstance(reading, dict) else None
            if type(seq) is not int or not previous < seq <= last:
                raise ProtocolError(
                    f"readings[{index}].seq: ascending integers from first_seq to last_seq"
                )
            previous = seq
        return cls(gateway, first, last, readings)
