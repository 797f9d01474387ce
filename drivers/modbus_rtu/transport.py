"""The ``modbus_rtu`` driver: polls one slave's register map through its bus's owner.

The planned requests (``codec.plan``) are grouped by poll interval (the device's, or a
register's own); each poll sends the requests of every group that is due, in turn,
through the ``Bus`` the device shares with every other device on its port, and puts one
reading per register. A slave that does not answer (timeout, or bytes that are no
valid answer) ends its poll at once, so it holds the bus for at most one ``timeout``;
its next poll waits ``poll_interval``, then twice that, up to ``retry_max``, while the
other slaves keep their own pace. An exception response is an answer: the other
requests of the poll go on. Each kind of failure is counted per slave (``slave``, a
``SlaveStatus`` also shown under the device in the status API and /metrics) and in the
device's status (``state`` "open" while it answers, "waiting" while it does not;
``last_error`` with the counts); bytes that made no valid answer are kept as a dead
letter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from drivers.fault_log import FaultLog
from drivers.modbus_rtu.bus import Bus, BusConflict, Failure, shared_bus
from drivers.modbus_rtu.codec import Block, Value, decode, encode, plan
from drivers.modbus_rtu.settings import ModbusRtuSettings
from drivers.modbus_rtu.slave import SlaveStatus
from gateway.errors import DriverError
from gateway.interfaces import DeviceStatus, SampleSink
from gateway.reading import DeadLetter, Sample

log = logging.getLogger("drivers.modbus_rtu")


class ModbusRtuDriver:
    """Reads one Modbus RTU slave into a ``SampleSink``; ``write`` sets its registers."""

    def __init__(
        self,
        settings: ModbusRtuSettings,
        sink: SampleSink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.registers:
            raise DriverError(settings.id, "modbus_rtu needs at least one register")
        self.device_id = settings.id
        self.settings = settings
        self.slave = SlaveStatus(settings.slave_id)
        self.status = DeviceStatus(detail=self.slave)
        self.blocks = plan(settings.registers, settings.poll_interval)
        self._registers = {r.sensor: r for r in settings.registers}
        self._sink = sink
        self._clock = clock
        self._faults = FaultLog(settings.id, log)
        self._bus: Bus | None = None

    async def run(self) -> None:
        try:
            while True:
                try:
                    async with shared_bus(self.settings) as bus:
                        self._bus = bus
                        await self._poll_forever(bus)
                except BusConflict as exc:
                    self._bus = None
                    self.status.state = "waiting"
                    self.status.errors += 1
                    self.status.last_error = str(exc)
                    self._faults.report(logging.ERROR, str(exc))
                    # Another device may be reconfigured meanwhile: look again later.
                    await asyncio.sleep(self.settings.retry_max or self.settings.poll_interval)
        finally:
            self._bus = None
            self.status.state = "stopped"

    @property
    def counts(self) -> Counter[str]:
        """Failures of this slave by kind: timeout, crc error, bad frame, exception, port."""
        return self.slave.failures

    async def _poll_forever(self, bus: Bus) -> None:
        loop = asyncio.get_running_loop()
        # When each poll interval's blocks are next due (loop time).
        due = dict.fromkeys((b.interval for b in self.blocks), loop.time())
        while True:
            wait = min(due.values()) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            started = loop.time()
            ready = {interval for interval, at in due.items() if at <= started}
            blocks = [b for b in self.blocks if b.interval in ready]
            _samples, silence = await self._read(bus, blocks)
            if silence is None:
                self.status.state = "open"
                for interval in ready:
                    due[interval] = started + interval
                continue
            self.status.state = "waiting"
            interval = self.settings.poll_interval
            backoff = interval * 2 ** min(self.slave.silent_polls, 30)
            backoff = max(interval, min(backoff, self.settings.retry_max))
            self.slave.poll_unanswered(backoff, self.settings.retry_max)
            # Counted from the failure, not from the poll's start: a poll that timed out
            # took a whole timeout, and the bus must then go to the others. Every block
            # waits: the slave is silent, not one of its registers.
            resume = loop.time() + backoff
            due = dict.fromkeys(due, resume)

    async def _read(
        self, bus: Bus, blocks: Sequence[Block] | None = None
    ) -> tuple[list[Sample], Failure | None]:
        """One read of ``blocks`` (default: every block), its readings put in the sink;
        with the failure that ended it if the slave did not answer."""
        samples: list[Sample] = []
        silence: Failure | None = None
        clean = True
        for block in self.blocks if blocks is None else blocks:
            try:
                words = await bus.read(self.settings.slave_id, block, self.settings.timeout)
            except Failure as failure:
                self._failed(failure)
                clean = False
                if failure.kind == "exception":
                    continue
                silence = failure
                break
            ts = self._clock()
            self.slave.answered(ts)
            for register, value in block.values(words):
                unit = register.unit or self.settings.units.get(register.sensor)
                samples.append(Sample(self.device_id, register.sensor, value, ts, unit))
        if samples:
            self._sink.put_samples(samples)
            self.status.readings += len(samples)
            self.status.last_reading_ts = samples[-1].ts
        if clean:
            self._faults.clear()
        if silence is None:
            self.slave.poll_done(clean=clean)
        return samples, silence

    async def read_now(self) -> dict[str, Value]:
        """Poll the slave now, through the bus owner (between the other requests of the
        bus), store the readings as a poll's, and answer with the values by sensor.
        DriverError if the slave did not answer; registers it refused with an exception
        are left out."""
        bus = self._bus
        if bus is None:
            raise DriverError(self.device_id, f"not running (state {self.status.state})")
        samples, silence = await self._read(bus)
        if silence is not None:
            raise DriverError(self.device_id, f"read failed: {silence}")
        if not samples:
            raise DriverError(self.device_id, f"read failed: {self.status.last_error}")
        return {sample.sensor: sample.value for sample in samples}

    def _failed(self, failure: Failure) -> None:
        self.slave.failed(failure)
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        message = f"slave {self.settings.slave_id}: {failure} (so far: {summary})"
        self.status.errors += 1
        self.status.last_error = message
        if failure.raw:
            self._sink.put_dead_letter(
                DeadLetter(self.device_id, f"modbus {failure.kind}", failure.raw, self._clock())
            )
        # One line per kind of failure while it repeats, not one per poll.
        self._faults.report(logging.WARNING, f"slave {self.settings.slave_id}: {failure.kind}")

    async def write(self, sensor: str, value: Value) -> Value:
        """Set a ``writable`` register or coil through the bus; returns, once the slave
        confirmed it, the value written (after rounding to the register's type).
        DriverError if it cannot be written or the slave did not confirm; a slave's
        refusal carries its Modbus exception code."""
        register = self._registers.get(sensor)
        if register is None:
            raise DriverError(self.device_id, f"no register named {sensor!r}")
        if not register.writable:
            raise DriverError(self.device_id, f"{sensor} is not writable")
        try:
            words = encode(register, value)
        except ValueError as exc:
            raise DriverError(self.device_id, str(exc)) from None
        bus = self._bus
        if bus is None:
            raise DriverError(self.device_id, "not running")
        try:
            await bus.write(self.settings.slave_id, register, words, self.settings.timeout)
        except Failure as failure:
            self._failed(failure)
            if failure.kind == "exception":
                raise DriverError(
                    self.device_id,
                    f"slave {self.settings.slave_id} refused the write of {sensor}: "
                    f"Modbus {failure.detail}",
                ) from None
            raise DriverError(self.device_id, f"write of {sensor} failed: {failure}") from None
        return decode(register, words)
