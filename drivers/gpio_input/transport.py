"""The ``gpio_input`` driver: one digital input on a Raspberry Pi, through gpiozero.

gpiozero calls back on its own thread at every edge. The callback only feeds the pure
``InputTracker`` under a lock and, if no drain is pending yet, schedules one on the
event loop with ``call_soon_threadsafe``: a pulse storm costs one integer and at most
one pending callback, never a queue that grows. Samples reach the sink only from the
event loop.

The pin is opened and closed in an executor. It cannot fail once open, so the state
machine is short::

    starting ──open──► open ──(cancel)──► stopped
        │                ▲
        └─open failed─► waiting ──open──┘

An open fails when there is no GPIO on the machine (no gpiozero backend), the pin name
is not one of the board's, the pin is busy or access is denied; each failure is counted
and retried with ``gateway.retry``, and the device is never given up on.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from drivers.fault_log import FaultLog
from drivers.gpio_input.codec import InputTracker, RateMeter, Taken
from drivers.gpio_input.settings import GpioInputSettings
from drivers.off_loop import open_off_loop
from drivers.open_faults import classify_open_error
from gateway.errors import DriverError
from gateway.interfaces import DeviceStatus, SampleSink
from gateway.reading import Sample
from gateway.retry import Backoff, Failure

# The name the driver logged under before it became a package: log filters rely on it.
log = logging.getLogger("drivers.gpio_input")

# Settled changes that may wait for the event loop; only a stalled loop under an edge
# storm fills it, and then the latest state is still reported.
MAX_PENDING_CHANGES = 1024


@functools.cache
def pin_errors() -> tuple[type[Exception], ...]:
    """What opening a pin raises for a device fault, for every backend gpiozero may use.

    ``ImportError``: gpiozero is not installed, or it found no backend (its
    ``BadPinFactory``: not a Raspberry Pi, or no lgpio). gpiozero wraps most other
    faults in ``GPIOZeroError``; the lgpio backend lets its own ``lgpio.error`` through
    ("GPIO busy"), RPi.GPIO raises ``RuntimeError`` (no access to the GPIO memory), the
    kernel ``OSError`` (permission on /dev/gpiochip*). gpiozero is imported here, at the
    first open, so a gateway without GPIO devices never loads it.
    """
    errors: list[type[Exception]] = [ImportError, OSError, RuntimeError, ValueError]
    for module, name in (("gpiozero", "GPIOZeroError"), ("lgpio", "error")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except ImportError:
            continue
    return tuple(errors)


def classify_pin_error(exc: Exception) -> Failure:
    """The retry policy for a failed open: permission waits long, the rest backs off."""
    if isinstance(exc, OSError | ValueError):
        return classify_open_error(exc)
    return Failure.TRANSIENT


def open_failure(what: str, fault: Failure, exc: Exception) -> str:
    """The ``last_error`` of a failed open of ``what`` (a pin, an ADC), with a hint."""
    message = f"cannot open {what}: {exc}"
    if isinstance(exc, ImportError):
        message += (
            " (GPIO needs a Raspberry Pi with edge-gateway[gpio] installed and, on "
            "Raspberry Pi OS, python3-lgpio)"
        )
    elif fault is Failure.DENIED:
        message += " (is the gateway's user in the gpio group?)"
    return message


class GpioInputDriver:
    """Reads one GPIO input into a ``SampleSink``: its level, or a count of its pulses.

    ``pin_factory`` is the gpiozero pin factory to open the pin with; None lets gpiozero
    choose (lgpio on current Raspberry Pi OS, then RPi.GPIO, pigpio, native).
    """

    def __init__(
        self,
        settings: GpioInputSettings,
        sink: SampleSink,
        *,
        pin_factory: Any = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.pin is None or settings.pin == "":
            raise DriverError(settings.id, "gpio_input needs a pin")
        if settings.mode == "counter" and settings.sample_interval <= 0:
            raise DriverError(settings.id, "gpio_input counts need a sample_interval above 0")
        self.device_id = settings.id
        self.settings = settings
        self.status = DeviceStatus()
        self.counter = settings.mode == "counter"
        keep = 0 if self.counter else MAX_PENDING_CHANGES
        self.tracker = InputTracker(settings.bounce, keep_changes=keep)
        base = settings.sensor
        self.state_sensor = base or "state"
        self.count_sensor = base or "count"
        self.rate_sensor = f"{base}_rate" if base else "rate"
        self._sink = sink
        self._pin_factory = pin_factory
        self._backoff = backoff or Backoff(settings.reconnect_min, settings.reconnect_max)
        self._faults = FaultLog(settings.id, log)
        self._clock = clock
        self._monotonic = monotonic
        # A pull-up makes a contact to ground (a low pin) the active level.
        self._active_level = not settings.pull_up
        # Guards the tracker and ``_drain_pending`` between gpiozero's thread and the loop.
        self._lock = threading.Lock()
        self._drain_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._settle_timer: asyncio.TimerHandle | None = None
        self._meter = RateMeter(0, monotonic())

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self._run()
        finally:
            self.status.state = "stopped"

    async def _run(self) -> None:
        while True:
            try:
                device = await self._open()
            except pin_errors() as exc:
                fault = classify_pin_error(exc)
                self._open_failed(fault, exc)
                # The traceback holds the half-built device (and forms a cycle through
                # the open's future): its claim on the pin would make the next attempt
                # fail as "in use" until the garbage collector ran.
                exc.__traceback__ = None
                self.status.state = "waiting"
                await asyncio.sleep(self._backoff.delay(fault))
                continue
            self.status.state = "open"
            self._faults.clear()
            self._meter = RateMeter(self.tracker.count, self._monotonic())
            log.info("%s: pin %s open (%s)", self.device_id, device.pin, self.settings.mode)
            try:
                await self._report_until_cancelled()
            finally:
                await self._close(device)

    # Opening and closing, in an executor ------------------------------------

    async def _open(self) -> Any:
        return await open_off_loop(self._open_pin, _close_device)

    def _open_pin(self) -> Any:
        """Runs in an executor: claim the pin, watch both edges, read the level."""
        errors = pin_errors()
        gpiozero = importlib.import_module("gpiozero")
        device = gpiozero.InputDevice(
            self.settings.pin, pull_up=self.settings.pull_up, pin_factory=self._pin_factory
        )
        try:
            pin = device.pin
            # Debounce is ours (the same on every backend), not the backend's.
            pin.bounce = None
            pin.edges = "both"
            with self._lock:
                # gpiozero keeps only a weak reference to the callback: a bound method
                # of this driver lives as long as the driver does.
                pin.when_changed = self._on_edge
                self.tracker.start(device.is_active, self._monotonic(), self._clock())
        except errors:
            device.close()
            raise
        return device

    async def _close(self, device: Any) -> None:
        # A level still bouncing at the stop never settled: it is not reported.
        self._drain_now()
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if self.counter:
            self._report_count()
        closing = asyncio.get_running_loop().run_in_executor(None, _close_device, device)
        # The pin is released before run() returns, even when it was cancelled.
        await asyncio.shield(closing)

    # Edges: gpiozero's thread, then the event loop ------------------------------

    def _on_edge(self, _ticks: float, level: int) -> None:
        """gpiozero's thread: record the edge; wake the loop unless it is already due.

        The backends' tick counters wrap (every 72 minutes for some), the monotonic
        clock does not, so edges are timed when the callback runs.
        """
        active = bool(level) == self._active_level
        with self._lock:
            self.tracker.edge(active, self._monotonic(), self._clock())
            if self._drain_pending:
                return
            self._drain_pending = True
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._drain_scheduled)
        except RuntimeError:
            # The loop closed while the pin was being released: nobody is left to tell.
            return

    def _drain_scheduled(self) -> None:
        with self._lock:
            self._drain_pending = False
        self._drain_now()

    def _drain_now(self) -> None:
        """The loop: hand settled changes to the sink; wake again when the level is due."""
        mono = self._monotonic()
        with self._lock:
            self.tracker.settle(mono)
            taken = self.tracker.take()
            due = self.tracker.settle_due
        if not self.counter:
            self._emit_changes(taken)
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if due is not None and self._loop is not None:
            self._settle_timer = self._loop.call_later(max(0.0, due - mono), self._drain_now)

    def _emit_changes(self, taken: Taken) -> None:
        if taken.changes:
            sensor = self.state_sensor
            self._put([self._sample(sensor, int(c.active), c.ts) for c in taken.changes])
        if taken.missed:
            template = (
                "%d level changes came faster than they could be recorded; "
                "the state after them was kept"
            )
            self.status.errors += 1
            self.status.last_error = template % taken.missed
            # One template, so the log's flood guard sees a storm as one repeated event.
            log.warning("%s: " + template, self.device_id, taken.missed)

    # Periodic readings -----------------------------------------------------------

    async def _report_until_cancelled(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.sample_interval
        if not self.counter:
            self._report_state()
        if interval <= 0:
            await asyncio.Event().wait()
        due = loop.time()
        while True:
            # A schedule, not a sleep after each report, so readings do not drift; a
            # loop that stalled past several slots reports once, not once per slot.
            due = max(due + interval, loop.time())
            await asyncio.sleep(due - loop.time())
            if self.counter:
                self._report_count()
            else:
                self._report_state()

    def _report_state(self) -> None:
        # Changes still waiting go first, so readings stay in the order they happened.
        self._drain_now()
        with self._lock:
            active = self.tracker.state
        self._put([self._sample(self.state_sensor, int(active), self._clock())])

    def _report_count(self) -> None:
        mono = self._monotonic()
        with self._lock:
            self.tracker.settle(mono)
            count = self.tracker.count
        rate = self._meter.report(count, mono)
        ts = self._clock()
        self._put(
            [self._sample(self.count_sensor, count, ts), self._sample(self.rate_sensor, rate, ts)]
        )

    # Output ----------------------------------------------------------------------

    def _sample(self, sensor: str, value: float | int, ts: float) -> Sample:
        return Sample(self.device_id, sensor, value, ts, self.settings.units.get(sensor))

    def _put(self, samples: Sequence[Sample]) -> None:
        self._sink.put_samples(samples)
        self.status.readings += len(samples)
        self.status.last_reading_ts = samples[-1].ts

    def _open_failed(self, fault: Failure, exc: Exception) -> None:
        message = open_failure(f"pin {self.settings.pin!r}", fault, exc)
        self.status.errors += 1
        self.status.last_error = message
        self._faults.report(logging.ERROR if fault is Failure.DENIED else logging.WARNING, message)


def _close_device(device: Any) -> None:
    """Runs in an executor: stop the edge callbacks and release the pin."""
    try:
        device.pin.when_changed = None
        device.close()
    except pin_errors() as exc:
        log.warning("closing pin %s failed: %s", device, exc)
