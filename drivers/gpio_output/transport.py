"""The ``gpio_output`` driver: one output of a Raspberry Pi, through gpiozero.

The pin is claimed in an executor at the configured ``initial`` level and reported as
a reading; every ``write`` sets it, reads the level back and reports that, so the
readings are the output's history and a write's answer is what the pin holds. At stop
the output returns to ``initial`` (its safe level) and the pin is released, which
gpiozero does by making it an input: from then on the circuit's pull resistor decides
the level. Open failures are retried as for ``gpio_input``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from drivers.fault_log import FaultLog
from drivers.gpio_input.transport import classify_pin_error, open_failure, pin_errors
from drivers.gpio_output.settings import GpioOutputSettings, output_level
from drivers.off_loop import open_off_loop
from gateway.errors import DriverError
from gateway.fields import Invalid
from gateway.interfaces import DeviceStatus, SampleSink
from gateway.reading import Sample
from gateway.retry import Backoff, Failure

log = logging.getLogger(__name__)


class GpioOutputDriver:
    """Drives one GPIO output and reports its level; ``write`` sets it.

    ``pin_factory`` is the gpiozero pin factory (None lets gpiozero choose), as for
    ``GpioInputDriver``.
    """

    def __init__(
        self,
        settings: GpioOutputSettings,
        sink: SampleSink,
        *,
        pin_factory: Any = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = settings.id
        self.settings = settings
        self.status = DeviceStatus()
        self.sensor = settings.sensor or "state"
        self._sink = sink
        self._pin_factory = pin_factory
        self._backoff = backoff or Backoff(settings.reconnect_min, settings.reconnect_max)
        self._faults = FaultLog(settings.id, log)
        self._clock = clock
        self._device: Any = None

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.status.state = "stopped"

    async def _run(self) -> None:
        while True:
            try:
                device = await open_off_loop(self._open_pin, self._release)
            except pin_errors() as exc:
                fault = classify_pin_error(exc)
                message = open_failure(f"pin {self.settings.pin!r}", fault, exc)
                self.status.errors += 1
                self.status.last_error = message
                level = logging.ERROR if fault is Failure.DENIED else logging.WARNING
                self._faults.report(level, message)
                # The traceback holds the half-built device and its claim on the pin.
                exc.__traceback__ = None
                self.status.state = "waiting"
                await asyncio.sleep(self._backoff.delay(fault))
                continue
            self._device = device
            self.status.state = "open"
            self._faults.clear()
            log.info("%s: output pin %s open", self.device_id, device.pin)
            try:
                self._report(device)
                await asyncio.Event().wait()
            finally:
                self._device = None
                closing = asyncio.get_running_loop().run_in_executor(None, self._release, device)
                # The pin is back at its safe level and released before run() returns.
                await asyncio.shield(closing)

    def _open_pin(self) -> Any:
        """Runs in an executor: claim the pin, driving it at ``initial`` from the start."""
        gpiozero = importlib.import_module("gpiozero")
        settings = self.settings
        if settings.pwm:
            return gpiozero.PWMOutputDevice(
                settings.pin,
                active_high=settings.active_high,
                initial_value=settings.initial,
                frequency=settings.frequency,
                pin_factory=self._pin_factory,
            )
        return gpiozero.DigitalOutputDevice(
            settings.pin,
            active_high=settings.active_high,
            initial_value=bool(settings.initial),
            pin_factory=self._pin_factory,
        )

    def _release(self, device: Any) -> None:
        """Runs in an executor: the safe level, then the pin released."""
        try:
            device.value = self._device_value(self.settings.initial)
            device.close()
        except pin_errors() as exc:
            log.warning("%s: releasing pin %s failed: %s", self.device_id, device, exc)

    async def write(self, sensor: str, value: object) -> float | int:
        """Set the output to ``value`` and return the level read back from the pin.

        ``value``: ``true``/``false`` or ``0``/``1``; with ``pwm``, a duty cycle from 0
        to 1. DriverError for another sensor name, a bad value, or an output not open.
        """
        if sensor != self.sensor:
            raise DriverError(self.device_id, f"has no output {sensor!r} (it has {self.sensor!r})")
        try:
            level = output_level(value)
        except Invalid as exc:
            raise DriverError(self.device_id, f"{sensor}: {exc}") from None
        if not self.settings.pwm and level not in (0.0, 1.0):
            raise DriverError(self.device_id, f"{sensor}: must be 0 or 1 (not a pwm output)")
        device = self._device
        if device is None:
            raise DriverError(self.device_id, f"output not open (state {self.status.state})")
        # One register write through the kernel's GPIO character device: microseconds,
        # so it runs on the loop and writes apply in the order they were made.
        try:
            device.value = self._device_value(level)
        except pin_errors() as exc:
            self.status.errors += 1
            self.status.last_error = f"cannot set pin {self.settings.pin!r}: {exc}"
            raise DriverError(self.device_id, self.status.last_error) from None
        return self._report(device)

    def read_now(self) -> dict[str, float | int]:
        """The level the pin holds now. Not stored: the readings are the output's
        changes, and this is the last of them."""
        device = self._device
        if device is None:
            raise DriverError(self.device_id, f"output not open (state {self.status.state})")
        return {self.sensor: self._level(device)}

    def _level(self, device: Any) -> float | int:
        return float(device.value) if self.settings.pwm else int(device.value)

    def _device_value(self, level: float) -> float | bool:
        return level if self.settings.pwm else level == 1.0

    def _report(self, device: Any) -> float | int:
        """The level the pin holds, as a reading; returned as the write's confirmation."""
        value = self._level(device)
        ts = self._clock()
        unit = self.settings.units.get(self.sensor)
        self._sink.put_samples([Sample(self.device_id, self.sensor, value, ts, unit)])
        self.status.readings += 1
        self.status.last_reading_ts = ts
        return value
