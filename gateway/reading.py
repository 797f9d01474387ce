"""The unit of data everywhere: a sample before commit, a stored reading after.

A reading is encoded to JSON exactly once, when the store commits it and gives it
its ``seq``; uplinks and the local stream send those stored bytes as they are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

Value = float | int | str | bool


@dataclass(frozen=True, slots=True)
class Sample:
    """A value read from a device, not yet committed (it has no ``seq`` yet)."""

    device: str
    sensor: str
    value: Value
    ts: float
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that could not become a reading, kept with its raw bytes."""

    device: str
    reason: str
    raw: bytes
    ts: float


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A committed reading: its ``seq``, its device and its encoded JSON object."""

    seq: int
    device: str
    payload: bytes


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(seq: int, sample: Sample) -> bytes:
    """The JSON object of the contract, as UTF-8 bytes.

    Non-finite floats are not valid JSON; they are sent as strings so that a
    sensor reporting ``nan`` is still delivered rather than lost.
    """
    value: Value = sample.value
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)
    obj: dict[str, object] = {
        "seq": seq,
        "ts": sample.ts,
        "device": sample.device,
        "sensor": sample.sensor,
        "value": value,
    }
    if sample.unit is not None:
        obj["unit"] = sample.unit
    return _encoder.encode(obj).encode()


def join_payloads(payloads: list[bytes]) -> bytes:
    """A JSON array of already-encoded readings, without decoding them."""
    return b"[" + b",".join(payloads) + b"]"
