"""Which readings an uplink carries, and in which lane: pure code, no I/O.

An uplink carries the readings of the devices its ``devices`` globs match. With
devices or sensors of ``priority = "high"`` among them it reads the log in two
lanes, each with its own durable cursor: the priority lane carries only the
high-priority readings, the normal lane all the others. Each lane keeps its readings
in seq order, so a device's readings of one priority never overtake each other;
retention waits for both cursors. ``docs/mqtt.md`` (Priority) describes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.globs import glob_matcher
from gateway.reading import StoredReading
from gateway.settings import DeviceSettings

# The priority lane's cursor is the uplink's name with this suffix (uplink names are
# ids, which cannot hold a ":", so it never names another uplink).
PRIORITY_SUFFIX = ":priority"
# Device ids whose match against the globs is remembered; a log may hold readings of
# devices no longer configured, so the memo is bounded.
_MEMO_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class PriorityRules:
    """The high-priority devices and sensors of a configuration."""

    # Devices all of whose sensors are high, unless ``sensors`` says otherwise.
    devices: frozenset[str] = frozenset()
    # (device, sensor) -> high, for sensors whose priority differs from their device's.
    sensors: frozenset[tuple[str, str, bool]] = frozenset()

    @classmethod
    def of(cls, devices: Iterable[DeviceSettings]) -> PriorityRules:
        high: set[str] = set()
        sensors: set[tuple[str, str, bool]] = set()
        for device in devices:
            device_high = device.priority == "high"
            if device_high:
                high.add(device.id)
            for sensor, level in device.sensor_priority.items():
                if (level == "high") != device_high:
                    sensors.add((device.id, sensor, level == "high"))
        return cls(frozenset(high), frozenset(sensors))


class Selection:
    """What one uplink carries, split into lanes: ``carries`` and ``high``."""

    def __init__(self, globs: Iterable[str], rules: PriorityRules) -> None:
        matchers = [glob_matcher(g) for g in globs]
        self._matches: Callable[[str], bool] = lambda device: any(m(device) for m in matchers)
        self._memo: dict[str, bool] = {}
        self._high_devices = rules.devices
        self._sensor_rules: dict[str, dict[str, bool]] = {}
        for device, sensor, high in rules.sensors:
            self._sensor_rules.setdefault(device, {})[sensor] = high
        self.rules = rules

    def carries_device(self, device: str) -> bool:
        known = self._memo.get(device)
        if known is None:
            known = self._matches(device)
            if len(self._memo) < _MEMO_LIMIT:
                self._memo[device] = known
        return known

    def high(self, reading: StoredReading) -> bool:
        """True for a high-priority reading."""
        device = reading.device
        overrides = self._sensor_rules.get(device)
        default = device in self._high_devices
        if overrides is None:
            return default
        return overrides.get(_sensor_of(reading.payload), default)

    def priority_devices(self) -> tuple[str, ...]:
        """The devices this uplink carries that may send a high-priority reading: the
        priority lane reads only theirs from the log (none: no priority lane)."""
        rules = self.rules
        candidates = rules.devices | {d for d, _, high in rules.sensors if high}
        return tuple(sorted(d for d in candidates if self.carries_device(d)))


def _sensor_of(payload: bytes) -> str:
    """The ``sensor`` of an encoded reading (only for devices with per-sensor rules)."""
    try:
        sensor = json.loads(payload).get("sensor")
    except (ValueError, AttributeError):
        return ""
    return sensor if isinstance(sensor, str) else ""
