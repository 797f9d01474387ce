"""Per-sensor transforms, applied to a device's samples before the store.

A device's ``[[devices.transforms]]`` tables each pick sensors by name (or by a glob
with ``*`` and ``?``) and say what happens to their samples, in this order: the value
is scaled and offset, the sensor renamed and given a unit; then, with a ``window``, the
samples of each window become one aggregate (min, max, mean, last or count) stamped
with the window's end; last, what would be sent is filtered by a deadband and a
minimum interval, both measured from the last value sent. The first table that matches
a sensor applies; a sensor no table matches is sent as it is.

``Transforms`` is pure: it is given the samples and the time, and answers what to
send. ``gateway.ingest.DeviceSink`` drives it: it feeds the device's samples and calls
``due`` when the earliest open window ends (a timer on the event loop), so a window
closes on time even when no further sample arrives; ``flush`` at a stop sends what
the open windows hold. Its state is a few numbers per sensor, and the sink's sensor
name bound bounds the sensors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from gateway.fields import (
    Given,
    Invalid,
    choice,
    duration,
    finite_number,
    key,
    kind_of,
    sensor_name,
    text,
    toml_value,
)
from gateway.reading import MAX_SENSOR_NAME, SENSOR_NAME_RULE, Sample, SensorNames, Value

Aggregate = Literal["min", "max", "mean", "last", "count"]
AGGREGATES: tuple[Aggregate, ...] = ("min", "max", "mean", "last", "count")

# A glob is a sensor name in which "*" (any run of characters) and "?" (one character)
# may stand for parts; brackets are literal, since sensor names may hold them.
SENSOR_GLOB_RULE = f"a sensor name ({SENSOR_NAME_RULE}), where '*' and '?' may stand for parts"


def is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def compile_glob(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def sensor_glob(value: object) -> str:
    pattern = text(value)
    # A literal name must be a valid one; so must a glob with its wildcards taken away.
    literal = pattern.replace("*", "").replace("?", "")
    valid = len(pattern) <= MAX_SENSOR_NAME and (
        (is_glob(pattern) and not literal)
        or SensorNames(limit=1).refusal(literal or pattern) is None
    )
    if not valid:
        raise Invalid(f"must be {SENSOR_GLOB_RULE} (got {toml_value(pattern)})")
    return pattern


@dataclass(frozen=True, slots=True)
class Deadband:
    """How far a value must move from the last one sent to be sent again."""

    size: float
    # True: ``size`` is a percentage of the last value sent (its magnitude).
    percent: bool = False

    def band(self, last: float) -> float:
        return abs(last) * self.size / 100 if self.percent else self.size


_PERCENT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*")


def deadband(value: object) -> Deadband:
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value)
        if match is None:
            raise Invalid(
                f'must be a number (absolute) or a percentage like "5%" (got {toml_value(value)})'
            )
        return Deadband(float(match[1]), percent=True)
    size = finite_number(value)
    if size < 0:
        raise Invalid("must not be negative")
    return Deadband(float(size))


@dataclass(frozen=True, slots=True, kw_only=True)
class TransformSettings:
    """One ``[[devices.transforms]]`` table: what happens to the samples of some sensors."""

    sensor: str = field(
        metadata=key(
            sensor_glob,
            "string",
            'The sensor name this table applies to, or a glob: `"t"`, `"temp_*"`, `"*"` '
            "(`*` any run of characters, `?` one). The first table that matches applies.",
        )
    )
    scale: int | float = field(
        default=1,
        metadata=key(
            finite_number, "number", "The value becomes `value * scale + offset` (numbers only)."
        ),
    )
    offset: int | float = field(default=0, metadata=key(finite_number, "number", "See `scale`."))
    rename: str | None = field(
        default=None,
        metadata=key(
            sensor_name,
            "string",
            "The sensor's name in its readings (and in what follows: MQTT, the store, the "
            "dashboard). Only with a `sensor` that names one sensor, not a glob.",
        ),
    )
    unit: str | None = field(
        default=None,
        metadata=key(text, "string", "The readings' `unit` (replaces the one of `units`)."),
    )
    deadband: Deadband | None = field(
        default=None,
        metadata=key(
            deadband,
            "number or percentage",
            "A reading is sent only when it differs from the last one sent by more than "
            'this: an absolute amount (`0.5`) or a percentage of the last value (`"2%"`). '
            "`0`: only changes are sent.",
        ),
    )
    min_interval: float = field(
        default=0.0,
        metadata=key(
            duration(positive=False),
            "duration",
            "A reading is sent only this long or longer after the last one sent; the ones "
            "between are dropped. `0`: no minimum.",
        ),
    )
    window: float = field(
        default=0.0,
        metadata=key(
            duration(positive=False),
            "duration",
            "With `aggregate`: the samples of each window of this length (aligned to the "
            'clock: a `"1m"` window ends on each minute) become one reading, whose `ts` is '
            "the window's end. `0`: no aggregation.",
        ),
    )
    aggregate: Aggregate | None = field(
        default=None,
        metadata=key(
            choice(AGGREGATES),
            "string",
            'What a window\'s reading holds: `"min"`, `"max"`, `"mean"` (numbers only), '
            '`"last"` (its last value) or `"count"` (how many samples it had).',
        ),
    )

    def cross_check(self, given: Given) -> Iterable[tuple[str, str]]:
        if self.rename is not None and is_glob(self.sensor) and given.ok("sensor", "rename"):
            yield (
                "rename",
                f"needs `sensor` to name one sensor, not the glob {toml_value(self.sensor)}",
            )
        if self.aggregate is not None and not self.window and given.ok("window", "aggregate"):
            yield "window", f'required with aggregate = "{self.aggregate}"'
        if self.window and self.aggregate is None and given.ok("window", "aggregate"):
            yield "aggregate", f"required with window (one of {', '.join(AGGREGATES)})"
        if given.given == {"sensor"}:
            yield "sensor", "the table names no transform (scale, rename, deadband, window, …)"


# The pipeline -------------------------------------------------------------------------


# Integers beyond this cannot be scaled or averaged as floats (OverflowError).
MAX_INTEGER = 2**1023


def _number(value: Value) -> bool:
    kind = type(value)
    if kind is int:
        return -MAX_INTEGER < value < MAX_INTEGER  # type: ignore[operator]
    return kind is float and math.isfinite(value)  # type: ignore[arg-type]


def _needs_number(rule: TransformSettings) -> bool:
    # A count is a number whatever it counts.
    deadband = rule.deadband is not None and rule.aggregate != "count"
    return (
        rule.scale != 1 or rule.offset != 0 or deadband or rule.aggregate in ("min", "max", "mean")
    )


class _Sensor:
    """The state of one transformed sensor: the last value sent and its open window."""

    __slots__ = (
        "count",
        "high",
        "index",
        "latest",
        "latest_ts",
        "low",
        "name",
        "numeric",
        "rule",
        "sent_ts",
        "sent_value",
        "total",
        "unit",
    )

    def __init__(self, rule: TransformSettings, sensor: str) -> None:
        self.rule = rule
        self.name = rule.rename or sensor
        self.unit = rule.unit
        self.numeric = _needs_number(rule)
        self.sent_value: Value | None = None
        self.sent_ts: float | None = None
        # The open window: its index (start = index * window), None when none is open.
        self.index: int | None = None
        self.count = 0
        self.low: Value = 0
        self.high: Value = 0
        self.total: float = 0
        self.latest: Value = 0
        self.latest_ts = 0.0

    @property
    def window_end(self) -> float | None:
        return None if self.index is None else (self.index + 1) * self.rule.window

    def add(self, value: Value, ts: float) -> None:
        # Only numbers reach here when the aggregate needs them (min, max, mean).
        if not self.numeric:
            pass
        elif self.count == 0:
            self.low = self.high = value
            self.total = value  # type: ignore[assignment]
        else:
            self.low = min(self.low, value)
            self.high = max(self.high, value)
            self.total += value  # type: ignore[operator]
        self.count += 1
        self.latest, self.latest_ts = value, ts

    def aggregate(self) -> Value:
        match self.rule.aggregate:
            case "min":
                return self.low
            case "max":
                return self.high
            case "mean":
                return self.total / self.count
            case "count":
                return self.count
            case _:
                return self.latest

    def close(self, ts: float, out: list[Sample], device: str) -> None:
        """End the open window: its aggregate, stamped ``ts``, goes through the filters."""
        value = self.aggregate()
        self.index, self.count = None, 0
        self.send(value, ts, out, device)

    def send(self, value: Value, ts: float, out: list[Sample], device: str) -> None:
        """Append the reading unless the deadband or the minimum interval holds it back."""
        rule, sent_ts = self.rule, self.sent_ts
        # A clock stepped back (ts before the last one sent) restarts the interval.
        if sent_ts is not None and 0 <= ts - sent_ts < rule.min_interval:
            return
        if rule.deadband is not None and self.sent_value is not None:
            last = self.sent_value
            if abs(value - last) <= rule.deadband.band(last):  # type: ignore[operator, arg-type]
                return
        self.sent_value, self.sent_ts = value, ts
        out.append(Sample(device, self.name, value, ts, self.unit))


class Transforms:
    """The transforms of one device: samples in, the readings to store out (sans-io)."""

    def __init__(self, device: str, rules: Iterable[TransformSettings]) -> None:
        self._device = device
        self._rules = [(compile_glob(rule.sensor), rule) for rule in rules]
        # Per sensor name: its state, or None when no rule matches it.
        self._sensors: dict[str, _Sensor | None] = {}
        # The sensors with an open window, in the order they first opened one.
        self._windowed: dict[_Sensor, None] = {}
        # Never after the earliest end of an open window (maybe before: a window closed
        # by a sample leaves it early, and ``due`` then finds nothing and looks again).
        self._earliest: float | None = None

    def feed(self, sample: Sample, out: list[Sample]) -> str | None:
        """Append to ``out`` what ``sample`` makes sent now; or say why it cannot be used."""
        state = self._state(sample.sensor)
        if state is None:
            out.append(sample)
            return None
        value, ts, rule = sample.value, sample.ts, state.rule
        if state.numeric and not _number(value):
            kind = "one too large" if type(value) is int else kind_of(value)
            return f"transform of {toml_value(sample.sensor)}: needs a number, not {kind}"
        if rule.scale != 1 or rule.offset != 0:
            value = value * rule.scale + rule.offset  # type: ignore[operator]
        if rule.unit is None:
            state.unit = sample.unit
        if not rule.window:
            state.send(value, ts, out, self._device)
            return None
        if not math.isfinite(ts):
            return f"transform of {toml_value(sample.sensor)}: the time is not a finite number"
        index = math.floor(ts / rule.window)
        if state.index != index:
            if state.index is not None:
                # A sample of a later window (or, with a clock stepped back, an earlier
                # one) ends the open window.
                state.close((state.index + 1) * rule.window, out, self._device)
            state.index = index
            self._windowed[state] = None
            end = (index + 1) * rule.window
            if self._earliest is None or end < self._earliest:
                self._earliest = end
        state.add(value, ts)
        return None

    def next_due(self) -> float | None:
        """When ``due`` should be called next: when the earliest open window ends, or
        before (cheap, on the path of every sample); None while no window is open."""
        return self._earliest

    def due(self, now: float, out: list[Sample]) -> None:
        """Close every window that has ended by ``now``, in the order of their ends."""
        # Ended as ``feed`` sees it: floor(now / window) > index, without the floor.
        ended = [
            s for s in self._windowed if s.index is not None and now / s.rule.window >= s.index + 1
        ]
        for state in sorted(ended, key=lambda s: s.window_end or 0.0):
            state.close(state.window_end or now, out, self._device)
            self._windowed.pop(state, None)
        ends = [end for state in self._windowed if (end := state.window_end) is not None]
        self._earliest = min(ends, default=None)

    def flush(self, now: float, out: list[Sample]) -> None:
        """Close every open window at a stop; one cut short is stamped ``now`` (never
        before its last sample), not its end, which has not come."""
        self.due(now, out)
        for state in sorted(self._windowed, key=lambda s: s.window_end or 0.0):
            end = state.window_end or now
            state.close(max(min(end, now), state.latest_ts), out, self._device)
        self._windowed.clear()
        self._earliest = None

    def _state(self, sensor: str) -> _Sensor | None:
        try:
            return self._sensors[sensor]
        except KeyError:
            pass
        state = next(
            (_Sensor(rule, sensor) for glob, rule in self._rules if glob.fullmatch(sensor)), None
        )
        self._sensors[sensor] = state
        return state
