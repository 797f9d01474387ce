"""A telemetry message from the broker, checked before anything is landed.

The gateway publishes ``{"gateway": ID, "device": ID, "readings": [reading, …]}``
(docs/mqtt.md). Anything else (not JSON, another shape, a seq that is not a
positive integer) is hostile: the consumer parks it with its raw bytes and a
reason, counts it, and goes on; it never stops the stream behind it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

# A reading's own fields a consumer needs; others (unit, …) ride along in the row.
MAX_ID = 256


@dataclass(frozen=True, slots=True)
class Telemetry:
    gateway: str
    device: str
    readings: list[dict[str, Any]]


class HostileMessage(ValueError):
    """Why a message cannot be landed; the text goes into the parked row."""


def _identifier(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise HostileMessage(f"{what}: expected a string of 1 to {MAX_ID} characters")
    return value


def _reading(raw: object, index: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise HostileMessage(f"readings[{index}]: expected an object")
    seq = raw.get("seq")
    # bool is an int in Python; a seq of true is not a seq.
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise HostileMessage(f"readings[{index}].seq: expected a positive integer")
    ts = raw.get("ts")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
        raise HostileMessage(f"readings[{index}].ts: expected a number")
    if not isinstance(raw.get("sensor"), str):
        raise HostileMessage(f"readings[{index}].sensor: expected a string")
    return raw


def parse(body: bytes) -> Telemetry:
    """The message as a ``Telemetry``; raises ``HostileMessage`` naming what is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HostileMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HostileMessage("expected a JSON object")
    gateway = _identifier(data.get("gateway"), "gateway")
    device = _identifier(data.get("device"), "device")
    readings = data.get("readings")
    if not isinstance(readings, list) or not readings:
        raise HostileMessage("readings: expected a non-empty list")
    checked = [_reading(r, i) for i, r in enumerate(readings)]
    for reading in checked:
        # Each reading names its device (docs/mqtt.md); the message's is the fallback.
        reading.setdefault("device", device)
    return Telemetry(gateway, device, checked)
