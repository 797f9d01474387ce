"""Per-sensor transforms: each operation against a plain reference computation, the
configuration checked by path, and the device sink's timer, stop flush and dead letters
on a real store."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app import run_device
from gateway.ingest import DeviceSink
from gateway.interfaces import DeviceStatus
from gateway.reading import DeadLetter, Sample, Value
from gateway.store import admin
from gateway.transforms import Deadband, Transforms, TransformSettings, deadband
from tests.support.common import wait_until
from tests.support.config import parse, problems
from tests.support.store import opened
from tests.support.transforms import aggregate_reference, deadband_reference, interval_reference

DEVICE = "dev-1"

# Values and gaps between samples: finite, and small enough that sums stay exact enough
# to compare with a reference summed in the same order.
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.integers(-1000, 1000)
gaps = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)


@st.composite
def series(draw: st.DrawFn, min_size: int = 0) -> list[tuple[float, Value]]:
    """(ts, value) in time order, some sharing a ts."""
    vs = draw(st.lists(values, min_size=min_size, max_size=80))
    steps = draw(st.lists(gaps, min_size=len(vs), max_size=len(vs)))
    start = draw(st.floats(min_value=1.7e9, max_value=1.8e9))
    return list(zip(itertools.accumulate(steps, initial=start), vs, strict=False))


def run(rule: TransformSettings, points: Sequence[tuple[float, Value]]) -> list[Sample]:
    """Everything the transform sends for ``points``, open windows flushed at the end."""
    transforms = Transforms(DEVICE, [rule])
    out: list[Sample] = []
    for ts, value in points:
        assert transforms.feed(Sample(DEVICE, "s", value, ts), out) is None
    transforms.flush(math.inf, out)
    return out


def sent(samples: Sequence[Sample]) -> list[tuple[float, Value]]:
    return [(s.ts, s.value) for s in samples]


# References: the rules as plainly as they can be written ---------------------------------


# Each operation --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(series(), st.floats(min_value=0.0, max_value=1e5), st.booleans())
def test_deadband_never_sends_a_value_within_the_band_of_the_last_sent(
    points: list[tuple[float, Value]], size: float, percent: bool
) -> None:
    deadband = Deadband(size % 100 if percent else size, percent=percent)
    out = sent(run(TransformSettings(sensor="s", deadband=deadband), points))
    assert out == deadband_reference(points, deadband.band)
    for (_, before), (_, after) in itertools.pairwise(out):
        assert abs(after - before) > deadband.band(before)  # type: ignore[operator, arg-type]


@settings(max_examples=200, deadline=None)
@given(series(), st.floats(min_value=0.0, max_value=20.0))
def test_min_interval_sends_at_most_one_reading_per_interval(
    points: list[tuple[float, Value]], interval: float
) -> None:
    out = sent(run(TransformSettings(sensor="s", min_interval=interval), points))
    assert out == interval_reference(points, interval)
    assert all(b - a >= interval for (a, _), (b, _) in itertools.pairwise(out))


@settings(max_examples=300, deadline=None)
@given(
    series(),
    st.floats(min_value=0.25, max_value=30.0),
    st.sampled_from(["min", "max", "mean", "last", "count"]),
)
def test_each_window_sends_the_aggregate_of_its_samples_at_its_end(
    points: list[tuple[float, Value]], window: float, aggregate: Any
) -> None:
    rule = TransformSettings(sensor="s", window=window, aggregate=aggregate)
    assert sent(run(rule, points)) == aggregate_reference(points, window, aggregate)


@settings(max_examples=200, deadline=None)
@given(series(min_size=1), st.floats(min_value=0.25, max_value=30.0), st.data())
def test_windows_closed_by_the_clock_send_the_same_as_windows_closed_by_samples(
    points: list[tuple[float, Value]], window: float, data: st.DataObject
) -> None:
    """The timer's ``due(now)``, called at any times between samples (never before the
    last sample fed), changes when a window is sent, never what."""
    transforms = Transforms(
        DEVICE, [TransformSettings(sensor="s", window=window, aggregate="mean")]
    )
    out: list[Sample] = []
    for (ts, value), (next_ts, _) in itertools.pairwise([*points, (points[-1][0] + 60, 0)]):
        assert transforms.feed(Sample(DEVICE, "s", value, ts), out) is None
        due = transforms.next_due()
        assert due is not None
        # Never after the end of the open window (the one just fed).
        assert due <= (math.floor(ts / window) + 1) * window
        now = data.draw(st.floats(min_value=ts, max_value=next_ts))
        transforms.due(now, out)
        assert all(sample.ts <= now for sample in out)
    transforms.flush(math.inf, out)
    assert transforms.next_due() is None
    assert sent(out) == aggregate_reference(points, window, "mean")


@settings(max_examples=200, deadline=None)
@given(
    series(),
    st.floats(min_value=0.5, max_value=10.0),
    st.floats(min_value=0.0, max_value=1e4),
    st.integers(-5, 5) | st.floats(min_value=-10, max_value=10),
    st.integers(-100, 100),
)
def test_scale_then_aggregate_then_deadband_compose_as_documented(
    points: list[tuple[float, Value]], window: float, band: float, scale: float, offset: int
) -> None:
    rule = TransformSettings(
        sensor="s",
        scale=scale,
        offset=offset,
        window=window,
        aggregate="max",
        deadband=Deadband(band),
    )
    scaled = [(ts, v * scale + offset) for ts, v in points]  # type: ignore[operator]
    expected = deadband_reference(aggregate_reference(scaled, window, "max"), lambda _: band)
    assert sent(run(rule, points)) == expected


def test_rename_unit_and_globs_take_the_first_table_that_matches() -> None:
    rules = [
        TransformSettings(sensor="t", rename="temperature", unit="°C", scale=0.5),
        TransformSettings(sensor="t*", unit="never", scale=100),
        TransformSettings(sensor="count_?", unit="pulses"),
        TransformSettings(sensor="x[0]", rename="x0"),
    ]
    transforms = Transforms(DEVICE, rules)
    out: list[Sample] = []
    inputs = [
        Sample(DEVICE, "t", 43, 1.0, "raw"),
        Sample(DEVICE, "t2", 1, 1.0),
        Sample(DEVICE, "count_a", 7, 1.0, "x"),
        Sample(DEVICE, "count_ab", 7, 1.0),
        Sample(DEVICE, "x[0]", "on", 1.0),
        Sample(DEVICE, "x0", "untouched", 1.0),
    ]
    for sample in inputs:
        assert transforms.feed(sample, out) is None
    assert out == [
        Sample(DEVICE, "temperature", 21.5, 1.0, "°C"),
        Sample(DEVICE, "t2", 100, 1.0, "never"),
        Sample(DEVICE, "count_a", 7, 1.0, "pulses"),
        Sample(DEVICE, "count_ab", 7, 1.0),
        Sample(DEVICE, "x0", "on", 1.0),
        Sample(DEVICE, "x0", "untouched", 1.0),
    ]
    # Integers stay integers when scale and offset are integers.
    assert type(out[1].value) is int


def test_values_that_are_not_numbers_are_refused_where_a_number_is_needed() -> None:
    transforms = Transforms(
        DEVICE,
        [
            TransformSettings(sensor="a", deadband=Deadband(1)),
            TransformSettings(sensor="c", window=10, aggregate="count", deadband=Deadband(0)),
            TransformSettings(sensor="l", window=10, aggregate="last"),
        ],
    )
    out: list[Sample] = []
    for value in ("warm", True, math.nan, math.inf, 2**1100):
        reason = transforms.feed(Sample(DEVICE, "a", value, 1.0), out)
        assert reason is not None
        assert reason.startswith('transform of "a": needs a number')
    # A count, and the last value, take any value.
    for value in ("warm", True, math.nan):
        assert transforms.feed(Sample(DEVICE, "c", value, 1.0), out) is None
        assert transforms.feed(Sample(DEVICE, "l", value, 2.0), out) is None
    transforms.flush(math.inf, out)
    assert out[0] == Sample(DEVICE, "c", 3, 10.0)
    assert out[1].sensor == "l"
    assert math.isnan(out[1].value)  # type: ignore[arg-type]


def test_a_window_cut_short_by_a_stop_has_the_time_of_the_stop() -> None:
    transforms = Transforms(DEVICE, [TransformSettings(sensor="s", window=60, aggregate="max")])
    out: list[Sample] = []
    transforms.feed(Sample(DEVICE, "s", 1, 120.5), out)
    transforms.feed(Sample(DEVICE, "s", 3, 130.0), out)
    transforms.flush(150.0, out)
    assert out == [Sample(DEVICE, "s", 3, 150.0)]
    # A clock behind the last sample never stamps the aggregate before it.
    transforms.feed(Sample(DEVICE, "s", 5, 200.0), out)
    transforms.flush(190.0, out)
    assert out[-1] == Sample(DEVICE, "s", 5, 200.0)


def test_a_clock_stepped_back_restarts_the_minimum_interval() -> None:
    transforms = Transforms(DEVICE, [TransformSettings(sensor="s", min_interval=60)])
    out: list[Sample] = []
    for ts in (1000.0, 1030.0, 400.0, 430.0, 460.0, 1000.0):
        transforms.feed(Sample(DEVICE, "s", ts, ts), out)
    assert [s.ts for s in out] == [1000.0, 400.0, 460.0, 1000.0]


# Configuration -----------------------------------------------------------------------------

DEVICE_HEAD = """
[[devices]]
id = "d"
driver = "serial_line"
port = "/dev/ttyUSB0"
format = "kv"
"""


def test_transforms_are_read_from_the_configuration(tmp_path: Path) -> None:
    settings = parse(
        tmp_path,
        DEVICE_HEAD
        + """
[[devices.transforms]]
sensor = "t"
scale = 0.1
offset = -40
rename = "temperature"
unit = "°C"
deadband = "2.5%"
min_interval = "10s"

[[devices.transforms]]
sensor = "p*"
window = "1m"
aggregate = "mean"
deadband = 0.5
""",
    )
    first, second = settings.devices[0].transforms
    assert first == TransformSettings(
        sensor="t",
        scale=0.1,
        offset=-40,
        rename="temperature",
        unit="°C",
        deadband=Deadband(2.5, percent=True),
        min_interval=10.0,
    )
    assert second == TransformSettings(
        sensor="p*", window=60.0, aggregate="mean", deadband=Deadband(0.5)
    )


def test_every_bad_transform_key_is_named_by_its_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        DEVICE_HEAD
        + """
[[devices.transforms]]
sensor = "t"
deadband = "five"
scale = "2"

[[devices.transforms]]
sensor = "a b"
windw = "1m"

[[devices.transforms]]
sensor = "t*"
rename = "x"
aggregate = "avg"

[[devices.transforms]]
sensor = "h"
aggregate = "mean"

[[devices.transforms]]
sensor = "h"
window = "1m"
offset = nan

[[devices.transforms]]
sensor = "h"

[[devices.transforms]]
scale = 2
deadband = -1
""",
    )
    assert found == [
        'devices[0].transforms[0].deadband: must be a number (absolute) or a percentage like "5%" '
        '(got "five")',
        "devices[0].transforms[0].scale: must be a number, not a string",
        "devices[0].transforms[1].sensor: must be a sensor name (1 to 64 letters, digits and "
        "'_.:/+%#()[]-'), where '*' and '?' may stand for parts (got \"a b\")",
        'devices[0].transforms[1].windw: unknown key (did you mean "window"?)',
        'devices[0].transforms[2].aggregate: must be one of "min", "max", "mean", "last", '
        '"count" (got "avg")',
        'devices[0].transforms[2].rename: needs `sensor` to name one sensor, not the glob "t*"',
        'devices[0].transforms[3].window: required with aggregate = "mean"',
        "devices[0].transforms[4].offset: must be a finite number",
        "devices[0].transforms[4].aggregate: required with window (one of min, max, mean, last, "
        "count)",
        "devices[0].transforms[5].sensor: the table names no transform (scale, rename, "
        "deadband, window, …)",
        "devices[0].transforms[6].deadband: must not be negative",
        "devices[0].transforms[6].sensor: required",
    ]


def test_transforms_must_be_tables(tmp_path: Path) -> None:
    assert problems(tmp_path, DEVICE_HEAD + 'transforms = ["t"]\n') == [
        "devices[0].transforms: must be an array of tables ([[….transforms]] sections)"
    ]


# The device sink on a real store ----------------------------------------------------------


async def stored(store: Any) -> list[dict[str, Any]]:
    await store.flush()
    return [json.loads(r.payload) for r in await store.read_after(0, 10_000)]


async def test_the_sink_closes_a_window_on_time_without_a_further_sample(tmp_path: Path) -> None:
    rules = [
        TransformSettings(sensor="h", window=0.2, aggregate="count"),
        TransformSettings(sensor="t", deadband=Deadband(1)),
    ]
    async with opened(tmp_path) as store:
        sink = DeviceSink(store, DEVICE, rules)
        sink.status = status = DeviceStatus()
        # One time for all, so that the five share one window.
        now = time.time()
        samples = [Sample(DEVICE, "h", 40, now) for _ in range(5)]
        samples += [Sample(DEVICE, "t", v, now) for v in (20, 20.5, 22, 22.9)]
        sink.put_samples(samples)
        status.readings += len(samples)

        # No further sample comes: the timer closes the window.
        async def window_stored() -> bool:
            return any(r["sensor"] == "h" for r in await stored(store))

        await wait_until(window_stored, timeout=10, message="the window's count stored")
        readings = await stored(store)
        (count,) = [r for r in readings if r["sensor"] == "h"]
        assert count["value"] == 5
        # Its ts is the window's end (a whole number of windows), which has come.
        assert round(count["ts"] / 0.2, 6) == round(count["ts"] / 0.2)
        assert samples[0].ts < count["ts"] <= time.time()
        # Only the temperatures beyond the band of the last one sent are stored.
        assert [r["value"] for r in readings if r["sensor"] == "t"] == [20, 22]
        assert status.readings == 3
        sink.close()
        assert len(await stored(store)) == 3


async def test_the_sink_flushes_open_windows_at_close_and_leaves_dead_letters_alone(
    tmp_path: Path,
) -> None:
    rules = [
        TransformSettings(sensor="*", window=3600, aggregate="mean", unit="V"),
    ]
    now = 1_800_000_100.0
    async with opened(tmp_path) as store:
        sink = DeviceSink(store, DEVICE, rules, clock=lambda: now)
        sink.status = status = DeviceStatus()
        samples = [
            Sample(DEVICE, "a", 1, now - 10),
            Sample(DEVICE, "a", "high", now - 9),
            Sample(DEVICE, "bad name", 2, now - 8),
            Sample(DEVICE, "a", 2, now - 7),
            Sample(DEVICE, "b", 4.5, now - 5),
        ]
        sink.put_samples(samples)
        status.readings += len(samples)
        sink.put_dead_letter(DeadLetter(DEVICE, "line too long", b"t=1", now - 6))
        assert await stored(store) == []
        sink.close()
        readings = await stored(store)
        assert status.readings == 2
        assert status.errors == 2
        assert status.refused_names == 1
    assert [(r["sensor"], r["value"], r["ts"], r["unit"]) for r in readings] == [
        ("a", 1.5, now, "V"),
        ("b", 4.5, now, "V"),
    ]
    letters = admin.dead_letters(tmp_path, 10)
    assert sorted((d.reason.partition(":")[0], d.raw) for d in letters) == [
        ("bad sensor name", b"bad name=2"),
        ("line too long", b"t=1"),
        ('transform of "a"', b"a=high"),
    ]


@pytest.mark.parametrize(
    ("text", "size"), [("5%", 5.0), (" 12.5 % ", 12.5), ("0%", 0.0), ("250%", 250.0)]
)
def test_percent_deadbands_read_as_written(text: str, size: float) -> None:
    assert deadband(text) == Deadband(size, percent=True)


class _OneShotDriver:
    """Puts its samples, then reads nothing more until cancelled, like a quiet device."""

    device_id = DEVICE

    def __init__(self, sink: DeviceSink, samples: list[Sample]) -> None:
        self.status = DeviceStatus()
        self._sink = sink
        self._samples = samples
        self.put = asyncio.Event()

    async def run(self) -> None:
        self._sink.put_samples(self._samples)
        self.status.readings += len(self._samples)
        self.put.set()
        await asyncio.Event().wait()


async def test_a_stopped_device_flushes_its_open_windows_into_the_store(tmp_path: Path) -> None:
    """What a stop or a reload does to a device's task: cancelled, its windows stored."""
    rules = [TransformSettings(sensor="t", window=3600, aggregate="min")]
    async with opened(tmp_path) as store:
        sink = DeviceSink(store, DEVICE, rules)
        now = time.time()
        driver = _OneShotDriver(sink, [Sample(DEVICE, "t", v, now) for v in (3, 1, 2)])
        sink.status = driver.status
        task = asyncio.create_task(run_device(driver, sink))
        await driver.put.wait()
        assert await stored(store) == []
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (reading,) = await stored(store)
    assert (reading["sensor"], reading["value"]) == ("t", 1)
    assert now <= reading["ts"] <= time.time()
    assert driver.status.readings == 1
