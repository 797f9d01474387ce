"""The last committed reading of every device and sensor, kept from the commit listener."""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.reading import StoredReading

# ``gateway.reading.encode`` writes the keys in a fixed order (seq, ts, device, sensor,
# value), and quotes inside the device id are escaped, so the first occurrence of this
# key is the sensor's.
_SENSOR_KEY = b',"sensor":"'


def sensor_of(payload: bytes) -> str | None:
    """The sensor name of a stored payload, without decoding the whole object.

    Names holding escapes, and payloads of another shape, take the slow path.
    """
    start = payload.find(_SENSOR_KEY)
    if start >= 0:
        start += len(_SENSOR_KEY)
        end = payload.find(b'"', start)
        name = payload[start:end]
        if end > 0 and b"\\" not in name:
            return name.decode("utf-8", "replace")
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    sensor = obj.get("sensor") if isinstance(obj, dict) else None
    return sensor if isinstance(sensor, str) else None


class LatestReadings:
    """Device id -> sensor -> the newest reading's stored payload.

    The commit listener only finds each reading's sensor name (a byte search); payloads
    are decoded when someone asks, so keeping this costs little at high rates.
    """

    def __init__(self) -> None:
        self._by_device: dict[str, dict[str, bytes]] = {}

    def on_commit(self, batch: Sequence[StoredReading]) -> None:
        for reading in batch:
            sensor = sensor_of(reading.payload)
            if sensor is None:
                continue  # the store encodes every reading with a sensor; never here
            self._by_device.setdefault(reading.device, {})[sensor] = reading.payload

    def of(self, device: str) -> dict[str, object]:
        return {
            sensor: json.loads(payload)
            for sensor, payload in self._by_device.get(device, {}).items()
        }
