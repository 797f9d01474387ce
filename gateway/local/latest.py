"""The last committed reading of every device and sensor, kept from the commit listener."""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.reading import StoredReading


class LatestReadings:
    """Device id -> sensor -> the newest reading's decoded object.

    Payloads are decoded here once per reading; a payload that does not decode
    to an object with a ``sensor`` is counted, never raised on the commit path.
    """

    def __init__(self) -> None:
        self._by_device: dict[str, dict[str, dict[str, object]]] = {}
        self.undecodable = 0

    def on_commit(self, batch: Sequence[StoredReading]) -> None:
        for reading in batch:
            try:
                obj = json.loads(reading.payload)
            except ValueError:
                self.undecodable += 1
                continue
            sensor = obj.get("sensor") if isinstance(obj, dict) else None
            if not isinstance(sensor, str):
                self.undecodable += 1
                continue
            self._by_device.setdefault(reading.device, {})[sensor] = obj

    def of(self, device: str) -> dict[str, dict[str, object]]:
        return dict(self._by_device.get(device, {}))
