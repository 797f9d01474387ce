"""The gpio_input driver: its pure debounce/count core, and the driver on mock pins.

This machine has no GPIO hardware, so the driver opens its pins through gpiozero's
``MockFactory``: the mock is the only GPIO that can run here. It is still gpiozero's
real input device, pin reservation and edge callbacks; only the electrical pin is
simulated (``drive_high``/``drive_low``). The debounce and counting logic is tested
directly, without any pin.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from gpiozero import BadPinFactory, GPIOPinInUse, InputDevice
from gpiozero.pins.mock import MockFactory, MockPin
from hypothesis import given
from hypothesis import strategies as st

from drivers.gpio_input.codec import Change, InputTracker, RateMeter
from drivers.gpio_input.settings import GpioInputSettings
from drivers.gpio_input.transport import MAX_PENDING_CHANGES, GpioInputDriver
from gateway.driver_registry import create_driver, drivers
from gateway.errors import DriverError
from gateway.reading import Sample
from gateway.retry import Backoff
from tests.support.common import wait_until
from tests.support.drivers import RecordingSink, running, wait_open

# The core -----------------------------------------------------------------


def test_without_bounce_every_edge_is_a_change() -> None:
    tracker = InputTracker(0.0, keep_changes=10)
    tracker.start(False, mono=0.0, ts=100.0)
    for i, active in enumerate([True, False, True]):
        tracker.edge(active, mono=i + 1.0, ts=101.0 + i)
    assert tracker.take().changes == (
        Change(101.0, True),
        Change(102.0, False),
        Change(103.0, True),
    )
    assert (tracker.state, tracker.count, tracker.settle_due) == (True, 2, None)
    assert tracker.take().changes == ()


def test_a_level_counts_once_it_has_held_for_bounce() -> None:
    tracker = InputTracker(0.5, keep_changes=10)
    tracker.start(False, mono=0.0, ts=0.0)
    tracker.edge(True, mono=1.0, ts=1.0)
    due = tracker.settle_due
    assert due == 1.5
    tracker.settle(1.4)
    assert (tracker.state, tracker.take().changes) == (False, ())
    tracker.settle(1.5)
    assert (tracker.state, tracker.count, tracker.settle_due) == (True, 1, None)
    assert tracker.take().changes == (Change(1.0, True),)


def test_contact_bounce_becomes_one_change_at_the_level_it_rests_at() -> None:
    tracker = InputTracker(0.01, keep_changes=10)
    tracker.start(False, mono=0.0, ts=0.0)
    for i, active in enumerate([True, False, True, False, True]):
        tracker.edge(active, mono=1.0 + i * 0.001, ts=1.0 + i * 0.001)
    tracker.settle(2.0)
    assert tracker.take().changes == (Change(1.004, True),)
    assert tracker.count == 1


def test_a_spike_shorter_than_bounce_is_no_change() -> None:
    tracker = InputTracker(0.01, keep_changes=10)
    tracker.start(False, mono=0.0, ts=0.0)
    tracker.edge(True, mono=1.0, ts=1.0)
    tracker.edge(False, mono=1.002, ts=1.002)
    tracker.settle(5.0)
    assert (tracker.take().changes, tracker.count, tracker.settle_due) == ((), 0, None)


def test_the_next_edge_settles_a_level_that_held() -> None:
    """Pulse trains settle edge by edge; no timer is needed until the input rests."""
    tracker = InputTracker(0.001, keep_changes=0)
    tracker.start(False, mono=0.0, ts=0.0)
    for i in range(1, 201):
        tracker.edge(i % 2 == 1, mono=i * 0.005, ts=i * 0.005)
    assert tracker.count == 100
    assert tracker.take().changes == ()  # a counter keeps no changes


def test_a_repeated_level_is_no_edge() -> None:
    tracker = InputTracker(0.01, keep_changes=10)
    tracker.start(False, mono=0.0, ts=0.0)
    tracker.edge(True, mono=1.0, ts=1.0)
    tracker.edge(True, mono=1.009, ts=1.009)
    tracker.settle(1.01)
    assert tracker.take().changes == (Change(1.0, True),)


def test_full_queue_keeps_the_latest_state() -> None:
    tracker = InputTracker(0.0, keep_changes=3)
    tracker.start(False, mono=0.0, ts=0.0)
    for i in range(1, 11):
        tracker.edge(i % 2 == 1, mono=float(i), ts=float(i))
    taken = tracker.take()
    # 10 changes, 3 kept, and the 10th (inactive) since the 3rd was active.
    assert taken.changes == (
        Change(1.0, True),
        Change(2.0, False),
        Change(3.0, True),
        Change(10.0, False),
    )
    assert taken.missed == 6
    assert tracker.count == 5


def test_full_queue_ending_where_it_started_adds_nothing() -> None:
    tracker = InputTracker(0.0, keep_changes=2)
    tracker.start(False, mono=0.0, ts=0.0)
    for i in range(1, 5):
        tracker.edge(i % 2 == 1, mono=float(i), ts=float(i))
    taken = tracker.take()
    assert (taken.changes, taken.missed) == ((Change(1.0, True), Change(2.0, False)), 2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="bounce"):
        InputTracker(-1.0, keep_changes=1)
    with pytest.raises(ValueError, match="keep_changes"):
        InputTracker(0.0, keep_changes=-1)


def settled_reference(
    start: bool, edges: list[tuple[bool, float]], bounce: float, end: float
) -> list[Change]:
    """What settles, computed the slow way: each run of one level, held long enough."""
    runs: list[tuple[bool, float, float]] = []  # level, from, to
    level, since = start, 0.0
    for active, mono in edges:
        if active != level:
            runs.append((level, since, mono))
            level, since = active, mono
    runs.append((level, since, end))
    changes, state = [], start
    for active, begin, until in runs[1:]:
        if active != state and until - begin >= bounce:
            changes.append(Change(begin, active))
            state = active
    return changes


@given(
    start=st.booleans(),
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=60),
    bounce_ms=st.integers(0, 20),
    keep=st.integers(0, 8),
)
def test_any_edges_settle_as_the_reference_says(
    start: bool, steps: list[tuple[bool, int]], bounce_ms: int, keep: int
) -> None:
    """Whole milliseconds keep the comparisons exact; settle polls at random moments."""
    bounce = bounce_ms / 1000
    tracker = InputTracker(bounce, keep_changes=keep)
    tracker.start(start, mono=0.0, ts=0.0)
    edges: list[tuple[bool, float]] = []
    taken: list[Change] = []
    mono_ms = 0
    for active, gap_ms in steps:
        mono_ms += gap_ms
        edges.append((active, mono_ms / 1000))
        tracker.edge(active, mono=mono_ms / 1000, ts=mono_ms / 1000)
        if gap_ms % 3 == 0:
            tracker.settle(mono_ms / 1000 + 0.0005)
        result = tracker.take()
        taken.extend(result.changes)
        assert len(result.changes) <= keep + 1
    end = mono_ms / 1000 + 1.0
    tracker.settle(end)
    taken.extend(tracker.take().changes)
    expected = settled_reference(start, edges, bounce, end)
    assert tracker.count == sum(c.active for c in expected)
    assert tracker.state == (edges[-1][0] if edges else start)
    if keep:
        # Each take returns at most keep changes and the latest; with one edge per take
        # nothing is ever missed.
        assert taken == expected


def test_rate_meter() -> None:
    meter = RateMeter(count=10, since=100.0)
    assert meter.report(30, 104.0) == 5.0
    assert meter.report(30, 106.0) == 0.0
    assert meter.report(31, 106.0) == 0.0  # no time passed: no rate to tell
    assert (meter.count, meter.since) == (31, 106.0)


# The driver on gpiozero's mock pins -----------------------------------------


class BatchSink(RecordingSink):
    """Keeps every put_samples call as it came."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Sample]] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.batches.append(list(samples))

    @property
    def samples(self) -> list[Sample]:
        return [s for batch in self.batches for s in batch]

    def values(self, sensor: str) -> list[Any]:
        return [s.value for s in self.samples if s.sensor == sensor]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def gpio(**overrides: Any) -> GpioInputSettings:
    values: dict[str, Any] = {
        "id": "door-1",
        "pin": 17,
        "bounce": 0.0,
        "sample_interval": 3600.0,
    }
    values.update(overrides)
    return GpioInputSettings(**values)


def fast() -> Backoff:
    """Short waits, so retry tests take milliseconds."""
    return Backoff(0.01, 0.05, missing_poll=0.01)


def mock_pin(factory: MockFactory, name: str = "GPIO17") -> MockPin:
    pin: MockPin = factory.pin(name)
    return pin


async def test_level_changes_become_readings() -> None:
    factory, sink = MockFactory(), BatchSink()
    driver = GpioInputDriver(gpio(units={"state": "closed"}), sink, pin_factory=factory)
    async with running(driver):
        await wait_open(driver)
        pin = mock_pin(factory)
        # The state at open comes first: pulled up and not driven, the contact is open.
        await wait_until(lambda: sink.values("state") == [0], message="the initial state")
        pin.drive_low()  # the contact closes to ground
        await wait_until(lambda: sink.values("state") == [0, 1], message="closed")
        pin.drive_high()
        await wait_until(lambda: sink.values("state") == [0, 1, 0], message="open again")
    first = sink.samples[0]
    assert (first.device, first.sensor, first.unit) == ("door-1", "state", "closed")
    assert driver.status.readings == 3
    assert driver.status.errors == 0
    assert driver.status.last_reading_ts == sink.samples[-1].ts


async def test_pull_down_input_is_active_when_driven_high() -> None:
    factory, sink = MockFactory(), BatchSink()
    driver = GpioInputDriver(gpio(pull_up=False, sensor="running"), sink, pin_factory=factory)
    async with running(driver):
        await wait_open(driver)
        mock_pin(factory).drive_high()
        await wait_until(lambda: sink.values("running") == [0, 1], message="active")


async def test_edges_from_gpiozeros_thread_reach_the_sink_on_the_loop() -> None:
    factory = MockFactory()
    loop_thread: list[bool] = []
    loop = asyncio.get_running_loop()

    class LoopCheckingSink(BatchSink):
        def put_samples(self, samples: Sequence[Sample]) -> None:
            try:
                loop_thread.append(asyncio.get_running_loop() is loop)
            except RuntimeError:
                loop_thread.append(False)
            super().put_samples(samples)

    sink = LoopCheckingSink()
    driver = GpioInputDriver(gpio(), sink, pin_factory=factory)
    pin = mock_pin(factory)

    def toggle(times: int) -> None:
        for _ in range(times):
            pin.drive_low()
            pin.drive_high()

    async with running(driver):
        await wait_open(driver)
        await asyncio.to_thread(toggle, 50)
        await wait_until(lambda: len(sink.values("state")) == 101, message="every change")
    assert sink.values("state") == [0] + [1, 0] * 50
    assert all(loop_thread)


async def test_heartbeat_repeats_the_state() -> None:
    factory, sink = MockFactory(), BatchSink()
    driver = GpioInputDriver(gpio(sample_interval=0.02), sink, pin_factory=factory)
    async with running(driver):
        await wait_open(driver)
        mock_pin(factory).drive_low()
        await wait_until(lambda: sink.values("state").count(1) >= 4, message="heartbeats")
    values = sink.values("state")
    # 0 at open (and in any heartbeat before the change), then 1 in every later one.
    changed = values.index(1)
    assert changed >= 1
    assert set(values[:changed]) == {0}
    assert set(values[changed:]) == {1}
    assert all(len(batch) == 1 for batch in sink.batches)


async def test_debounce_reports_the_level_the_contact_rests_at() -> None:
    factory, sink = MockFactory(), BatchSink()
    mono, wall = FakeClock(0.0), FakeClock(1000.0)
    driver = GpioInputDriver(
        gpio(bounce=0.02), sink, pin_factory=factory, clock=wall, monotonic=mono
    )
    pin = mock_pin(factory)
    async with running(driver):
        await wait_open(driver)
        await wait_until(lambda: sink.values("state") == [0], message="the initial state")
        for i, level in enumerate([0, 1, 0, 1, 0]):  # a closing contact bouncing
            mono.now, wall.now = 1.0 + i * 0.001, 1001.0 + i * 0.001
            if level:
                pin.drive_high()
            else:
                pin.drive_low()
        # Not settled yet: the contact has not held its level for 20 ms.
        assert driver.tracker.state is False
        mono.now = 2.0  # time passes without an edge: the settle timer reports it
        await wait_until(lambda: sink.values("state") == [0, 1], message="the settled level")
        # A spike shorter than bounce is no change at all.
        mono.now = 3.0
        pin.drive_high()
        mono.now = 3.005
        pin.drive_low()
        mono.now = 4.0
        await wait_until(lambda: driver.tracker.settle_due is None, message="the spike dropped")
    assert sink.values("state") == [0, 1]
    assert sink.samples[1].ts == 1001.004  # when the input took the level it then held


async def test_counter_reports_count_and_rate() -> None:
    factory, sink = MockFactory(), BatchSink()
    settings = gpio(
        mode="counter",
        sample_interval=0.02,
        sensor="water",
        units={"water": "pulses", "water_rate": "1/s"},
    )
    driver = GpioInputDriver(settings, sink, pin_factory=factory)
    pin = mock_pin(factory)

    def pulses(times: int) -> None:
        for _ in range(times):
            pin.drive_low()
            pin.drive_high()

    async with running(driver):
        await wait_open(driver)
        await asyncio.to_thread(pulses, 500)
        await wait_until(lambda: 500 in sink.values("water"), message="the count")
    counts = sink.values("water")
    assert counts == sorted(counts)
    assert counts[-1] == 500
    assert all(rate >= 0 for rate in sink.values("water_rate"))
    assert any(rate > 0 for rate in sink.values("water_rate"))
    for batch in sink.batches:
        assert [(s.sensor, s.unit) for s in batch] == [("water", "pulses"), ("water_rate", "1/s")]
        assert batch[0].ts == batch[1].ts
    assert "state" not in {s.sensor for s in sink.samples}


async def test_a_clean_stop_reports_the_last_count() -> None:
    factory, sink = MockFactory(), BatchSink()
    driver = GpioInputDriver(gpio(mode="counter"), sink, pin_factory=factory)
    pin = mock_pin(factory)
    async with running(driver):
        await wait_open(driver)
        for _ in range(7):
            pin.drive_low()
            pin.drive_high()
        await wait_until(lambda: driver.tracker.count == 7, message="pulses counted")
    assert sink.values("count") == [7]
    assert len(sink.values("rate")) == 1


async def test_a_pulse_storm_costs_one_wakeup_and_bounded_memory() -> None:
    """Edges arriving while the loop is busy are counted in place and drained once."""
    factory, sink = MockFactory(), BatchSink()
    counter = GpioInputDriver(gpio(mode="counter"), sink, pin_factory=factory)
    level_pin = mock_pin(factory, "GPIO27")
    level = GpioInputDriver(gpio(id="storm", pin="GPIO27"), sink, pin_factory=factory)
    pin = mock_pin(factory)
    async with running(counter), running(level):
        await wait_open(counter)
        await wait_open(level)
        await wait_until(lambda: len(sink.batches) == 1, message="the initial state")
        # The loop runs none of the driver's callbacks until this loop ends.
        for _ in range(20_000):
            pin.drive_low()
            pin.drive_high()
            level_pin.drive_low()
            level_pin.drive_high()
        level_pin.drive_low()
        assert counter.tracker.count == 20_000
        await wait_until(lambda: len(sink.batches) == 2, message="one drain of the storm")
    storm = sink.batches[1]
    # The queue was full after MAX_PENDING_CHANGES changes; the state at the end is kept.
    assert len(storm) == MAX_PENDING_CHANGES + 1
    assert storm[-1].value == 1
    assert level.status.errors == 1
    assert level.status.last_error is not None
    assert "level changes came faster" in level.status.last_error
    # The counter, stopped last, reports its count once more on the way out.
    assert len(sink.batches) == 3
    assert (sink.batches[2][0].sensor, sink.batches[2][0].value) == ("count", 20_000)
    assert sink.batches[2][1].sensor == "rate"


class FailingFactory(MockFactory):  # type: ignore[misc]  # gpiozero ships no type hints
    """A mock pin factory whose pins fail to open with the given errors, then open."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__()
        self.errors = errors
        self.attempts = 0

    def pin(self, name: Any, pin_class: Any = None, **kwargs: Any) -> Any:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return super().pin(name, pin_class, **kwargs)


async def test_an_invalid_pin_waits_counts_and_retries() -> None:
    factory, sink = MockFactory(), BatchSink()
    driver = GpioInputDriver(gpio(pin="GPIO99"), sink, pin_factory=factory, backoff=fast())
    async with running(driver):
        await wait_until(lambda: driver.status.errors >= 3, message="retries")
        assert driver.status.state == "waiting"
    assert driver.status.last_error == "cannot open pin 'GPIO99': GPIO99 is not a valid pin name"
    assert sink.batches == []


async def test_a_busy_pin_opens_once_released() -> None:
    factory, sink = MockFactory(), BatchSink()
    holder = InputDevice(17, pin_factory=factory)
    driver = GpioInputDriver(gpio(), sink, pin_factory=factory, backoff=fast())
    async with running(driver):
        await wait_until(lambda: driver.status.errors >= 2, message="failed opens")
        assert driver.status.state == "waiting"
        assert driver.status.last_error is not None
        assert "already in use" in driver.status.last_error
        holder.close()
        await wait_open(driver)
        await wait_until(lambda: sink.values("state") == [0], message="the initial state")
    # The driver released the pin when it stopped.
    InputDevice(17, pin_factory=factory).close()


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (BadPinFactory("Unable to load any default pin factory!"), "python3-lgpio"),
        (ModuleNotFoundError("No module named 'gpiozero'"), "edge-gateway[gpio]"),
        (PermissionError(errno.EACCES, "Permission denied"), "gpio group"),
        (OSError(errno.EBUSY, "Device or resource busy"), "resource busy"),
    ],
)
async def test_open_failures_are_counted_with_a_hint_and_retried(
    error: Exception, hint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.gpio_input")
    factory, sink = FailingFactory([error, error]), BatchSink()
    backoff = Backoff(0.01, 0.01, missing_poll=0.01)
    driver = GpioInputDriver(gpio(), sink, pin_factory=factory, backoff=backoff)
    async with running(driver):
        await wait_open(driver)
        await wait_until(lambda: sink.values("state") == [0], message="the initial state")
    assert driver.status.errors == 2
    assert factory.attempts == 3
    assert driver.status.last_error is not None
    assert hint in driver.status.last_error
    # The second, identical failure was counted, and the count logged once the pin opened.
    assert len([r for r in caplog.records if hint in r.getMessage()]) == 1
    assert any("repeated 1 more times" in r.getMessage() for r in caplog.records)


async def test_stop_while_opening_releases_the_pin() -> None:
    factory, sink = MockFactory(), BatchSink()
    driver = GpioInputDriver(gpio(), sink, pin_factory=factory)
    task = asyncio.create_task(driver.run())
    await asyncio.sleep(0)  # one step of the loop: the open starts in its thread
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert driver.status.state == "stopped"

    def released() -> bool:
        try:
            InputDevice(17, pin_factory=factory).close()
        except GPIOPinInUse:
            return False
        return True

    await wait_until(released, message="the pin released")


def test_registered_and_needs_a_pin() -> None:
    assert drivers()["gpio_input"].create is GpioInputDriver
    sink = BatchSink()
    driver = create_driver(gpio(), sink)
    assert isinstance(driver, GpioInputDriver)
    assert driver.status.state == "starting"
    with pytest.raises(DriverError, match="gpio_input needs a pin"):
        GpioInputDriver(gpio(pin=None), sink)
    with pytest.raises(DriverError, match="sample_interval"):
        GpioInputDriver(gpio(mode="counter", sample_interval=0.0), sink)
