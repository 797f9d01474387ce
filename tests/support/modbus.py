"""Modbus RTU devices as the tests configure them: simulated meters, drivers, their keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from drivers.modbus_rtu.device import METER_REGISTERS
from drivers.modbus_rtu.settings import ModbusRtuSettings
from drivers.modbus_rtu.transport import ModbusRtuDriver
from gateway.reading import Sample
from simulators.modbus_bus import ModbusBus
from tests.support.drivers import RecordingSink, running


class Sink(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.samples: list[Sample] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)

    def values(self, sensor: str) -> list[Any]:
        return [s.value for s in self.samples if s.sensor == sensor]


# The simulated bus paces its bytes at its baud rate: tests run it fast.
BAUD = 115200


def meter(link: Path, slave_id: int, **keys: Any) -> ModbusRtuSettings:
    # A generous timeout: the simulator shares this loaded machine, and a live slave
    # must never seem dead.
    options: dict[str, Any] = {
        "poll_interval": 0.05,
        "timeout": 0.5,
        "retry_max": 1.0,
        "baudrate": BAUD,
        "registers": METER_REGISTERS,
    }
    return ModbusRtuSettings(
        id=f"meter-{slave_id}", port=str(link), slave_id=slave_id, **(options | keys)
    )


@asynccontextmanager
async def polled(
    link: Path, slave_ids: Sequence[int], **keys: Any
) -> AsyncIterator[dict[int, tuple[ModbusRtuDriver, Sink]]]:
    """A driver per slave id, all on ``link``, running until the block ends."""
    found = {i: (ModbusRtuDriver(meter(link, i, **keys), sink := Sink()), sink) for i in slave_ids}
    async with AsyncExitStack() as stack:
        for driver, _ in found.values():
            await stack.enter_async_context(running(driver))
        yield found


def meter_keys(slave_id: int) -> dict[str, object]:
    """The modbus_rtu keys of one simulated meter, every register of its map."""
    registers: list[dict[str, object]] = []
    for register in METER_REGISTERS:
        entry: dict[str, object] = {
            "sensor": register.sensor,
            "table": register.table,
            "address": register.address,
            "type": register.type,
            "word_order": register.word_order,
            "byte_order": register.byte_order,
            "scale": register.scale,
        }
        if register.type == "string":
            entry["length"] = register.length
        if register.unit:
            entry["unit"] = register.unit
        registers.append(entry)
    return {
        "slave_id": slave_id,
        "poll_interval": "100ms",
        "timeout": "500ms",
        "retry_max": "1s",
        "registers": registers,
    }


class PluggableBus:
    """A simulated bus that can be taken off its link and brought back, like an RS-485
    adapter pulled and plugged in again: ``async with PluggableBus(link, [1]) as bus``."""

    def __init__(self, link: Path, slave_ids: Sequence[int]) -> None:
        self.link = link
        self.slave_ids = list(slave_ids)
        self._bus: ModbusBus | None = None

    async def unplug(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            await bus.__aexit__(None, None, None)

    async def replug(self) -> None:
        if self._bus is None:
            self._bus = await ModbusBus(self.link, self.slave_ids, baudrate=BAUD).__aenter__()

    async def __aenter__(self) -> PluggableBus:
        await self.replug()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unplug()
