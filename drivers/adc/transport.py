"""The ``adc`` driver: the channels of an MCP3xxx ADC on SPI, through gpiozero, polled.

gpiozero models one channel per object (``MCP3008(channel=2)``), sharing one SPI
interface between them. The objects are made, read and closed in worker threads: an
SPI transfer is short on the kernel's spidev, but gpiozero falls back to bit-banging
the bus's pins where spidev is missing, which takes milliseconds per reading.

An open fails when there is no GPIO or SPI (no gpiozero backend), the bus's pins are
busy, or access is denied; a read fails if the bus goes away. Either is counted and
retried with ``gateway.retry``, as for the GPIO drivers, and the device is never given
up on.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from drivers.adc.settings import CHANNELS, AdcSettings
from drivers.fault_log import FaultLog
from drivers.gpio_input.transport import classify_pin_error, open_failure, pin_errors
from drivers.off_loop import open_off_loop
from gateway.errors import DriverError
from gateway.interfaces import DeviceStatus, SampleSink
from gateway.reading import Sample, Value
from gateway.retry import Backoff, Failure

log = logging.getLogger(__name__)


class AdcDriver:
    """Reads the configured channels of one ADC into a ``SampleSink`` every poll.

    ``pin_factory`` is the gpiozero pin factory (None lets gpiozero choose), as for
    ``GpioInputDriver``.
    """

    def __init__(
        self,
        settings: AdcSettings,
        sink: SampleSink,
        *,
        pin_factory: Any = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = settings.id
        self.settings = settings
        self.status = DeviceStatus()
        self._sink = sink
        self._pin_factory = pin_factory
        self._backoff = backoff or Backoff(settings.reconnect_min, settings.reconnect_max)
        self._faults = FaultLog(settings.id, log)
        self._clock = clock
        self._what = f"{settings.chip} on SPI {settings.spi_bus}.{settings.spi_device}"
        self._channels: list[Any] | None = None
        # One conversion at a time on the SPI bus: a poll and a read_now take turns.
        self._converting = asyncio.Lock()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.status.state = "stopped"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                channels = await open_off_loop(self._open_chip, _close_all)
            except pin_errors() as exc:
                fault = classify_pin_error(exc)
                self._failed(fault, open_failure(self._what, fault, exc))
                # The traceback holds the half-built devices and their claim on the pins.
                exc.__traceback__ = None
                await asyncio.sleep(self._backoff.delay(fault))
                continue
            self.status.state = "open"
            self._faults.clear()
            log.info("%s: %s open", self.device_id, self._what)
            self._channels = channels
            try:
                fault = await self._poll_until_failed(channels)
            finally:
                self._channels = None
                closing = loop.run_in_executor(None, _close_all, channels)
                # The bus is released before run() returns, even when it was cancelled.
                await asyncio.shield(closing)
            self.status.reconnects += 1
            await asyncio.sleep(self._backoff.delay(fault))

    async def _poll_until_failed(self, channels: list[Any]) -> Failure:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            try:
                volts = await self._convert(channels)
            except pin_errors() as exc:
                fault = classify_pin_error(exc)
                self._failed(fault, f"cannot read {self._what}: {exc}")
                exc.__traceback__ = None
                return fault
            self._report(volts)
            # A schedule, not a sleep after each poll, so polls do not drift.
            due = max(due + self.settings.poll_interval, loop.time())
            await asyncio.sleep(due - loop.time())

    async def read_now(self) -> dict[str, Value]:
        """Read every channel now (between polls), store the readings as a poll's, and
        answer with the values by sensor. DriverError if the chip is not open or the
        read fails (the poll that follows finds the failure and reopens)."""
        channels = self._channels
        if channels is None:
            raise DriverError(self.device_id, f"{self._what} not open (state {self.status.state})")
        try:
            volts = await self._convert(channels)
        except pin_errors() as exc:
            exc.__traceback__ = None
            raise DriverError(self.device_id, f"cannot read {self._what}: {exc}") from None
        return {sample.sensor: sample.value for sample in self._report(volts)}

    async def _convert(self, channels: list[Any]) -> list[float]:
        async with self._converting:
            return await asyncio.to_thread(_read_all, channels)

    def _open_chip(self) -> list[Any]:
        """Runs in an executor: one gpiozero device per configured channel."""
        gpiozero = importlib.import_module("gpiozero")
        settings = self.settings
        chip = getattr(gpiozero, settings.chip)
        spi = {
            "port": settings.spi_bus,
            "device": settings.spi_device,
            "max_voltage": settings.vref,
            "pin_factory": self._pin_factory,
        }
        opened: list[Any] = []
        try:
            for channel in settings.channels:
                # The x001 chips have a single input, and no channel argument.
                if CHANNELS[settings.chip] == 1:
                    opened.append(chip(**spi))
                else:
                    opened.append(chip(channel=channel.channel, **spi))
        except pin_errors():
            _close_all(opened)
            raise
        return opened

    def _report(self, volts: list[float]) -> list[Sample]:
        ts = self._clock()
        samples = []
        for channel, value in zip(self.settings.channels, volts, strict=True):
            unit = self.settings.units.get(channel.sensor, channel.unit) or None
            reading = value * channel.scale + channel.offset
            samples.append(Sample(self.device_id, channel.sensor, reading, ts, unit))
        self._sink.put_samples(samples)
        self.status.readings += len(samples)
        self.status.last_reading_ts = ts
        return samples

    def _failed(self, fault: Failure, message: str) -> None:
        self.status.state = "waiting"
        self.status.errors += 1
        self.status.last_error = message
        self._faults.report(logging.ERROR if fault is Failure.DENIED else logging.WARNING, message)


def _read_all(channels: list[Any]) -> list[float]:
    """Runs in a worker thread: each channel's input voltage (0 to vref)."""
    return [float(channel.voltage) for channel in channels]


def _close_all(channels: list[Any]) -> None:
    for channel in channels:
        try:
            channel.close()
        except pin_errors() as exc:
            log.warning("closing %s failed: %s", channel, exc)
