"""The unit of data everywhere: a sample before commit, a stored reading after.

A reading is encoded to JSON exactly once, when the store commits it and gives it
its ``seq``; uplinks and the local stream send those stored bytes as they are.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass

Value = float | int | str | bool

# The largest integer every JSON consumer reads exactly: one that parses numbers as
# float64 (JavaScript, many others) would read a larger one as another value. Larger
# integers go out as strings of their digits.
MAX_SAFE_INTEGER = 2**53 - 1

# Sensor names come from devices: bounded in length and characters, and in number per
# device (``SensorNames``), so a device inventing keys cannot grow memory without bound.
MAX_SENSOR_NAME = 64
MAX_SENSORS_PER_DEVICE = 512
_SENSOR_NAME = re.compile(r"[\w.:/+%#()\[\]-]{1," + str(MAX_SENSOR_NAME) + "}")
SENSOR_NAME_RULE = f"1 to {MAX_SENSOR_NAME} letters, digits and '_.:/+%#()[]-'"


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


@functools.lru_cache(maxsize=4096)
def _json_name(name: str) -> str:
    """Device, sensor and unit names repeat on every reading: quote each once."""
    return _encoder.encode(name)


def _json_value(value: Value) -> str:
    # Exact type checks: bool is an int subclass, and float subclasses are not ours.
    kind = type(value)
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return float.__repr__(value)
        # Non-finite floats are not valid JSON: sent as a string, not lost.
        return _encoder.encode(str(value))
    if kind is int:
        text = int.__repr__(value)
        return text if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else f'"{text}"'  # type: ignore[operator]
    return _encoder.encode(value)


def encode(seq: int, sample: Sample) -> bytes:
    """The JSON object of the contract, as UTF-8 bytes.

    Built by hand rather than through ``json``: this runs once per reading on the
    writer thread and is its largest cost. The output is byte for byte what
    ``reference_encode`` gives (the tests hold it to that).
    """
    ts = sample.ts
    # Anything but a finite float goes through json, which refuses what JSON cannot carry.
    ts_text = float.__repr__(ts) if type(ts) is float and math.isfinite(ts) else _encoder.encode(ts)
    text = (
        f'{{"seq":{seq},"ts":{ts_text},"device":{_json_name(sample.device)},'
        f'"sensor":{_json_name(sample.sensor)},"value":{_json_value(sample.value)}'
    )
    if sample.unit is not None:
        text += f',"unit":{_json_name(sample.unit)}'
    return (text + "}").encode()


def reference_encode(seq: int, sample: Sample) -> bytes:
    """The same object through ``json``: the definition ``encode`` must match."""
    value: Value = sample.value
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)
    if type(value) is int and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
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


class SensorNames:
    """The sensor names one device has used so far, checked once each and bounded.

    ``refusal`` is on the path of every sample: a known name costs one set lookup.
    """

    def __init__(self, limit: int = MAX_SENSORS_PER_DEVICE) -> None:
        self._limit = limit
        self._known: set[str] = set()

    def refusal(self, name: str) -> str | None:
        """None if ``name`` may be a sensor of this device, else why not."""
        if name in self._known:
            return None
        if not _SENSOR_NAME.fullmatch(name):
            return f"bad sensor name: must be {SENSOR_NAME_RULE}"
        if len(self._known) >= self._limit:
            return f"too many sensor names: at most {self._limit} per device"
        self._known.add(name)
        return None
