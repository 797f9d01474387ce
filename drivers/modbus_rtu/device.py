"""The simulated side: an energy meter served by pymodbus's own server, faults on demand.

The meter's values are laid out with this driver's codec (so the map below is what a
gateway configures to read it), but requests, framing, CRCs and answers are pymodbus's
server: an implementation independent of the gateway's request side.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus_rtu.codec import Value, encode
from drivers.modbus_rtu.settings import Register

# Registers per table served by each simulated slave (addresses 0 to TABLE_SIZE - 1).
TABLE_SIZE = 32

# The meter's map: the [[devices.registers]] of a device that reads it.
METER_REGISTERS = (
    Register(sensor="voltage", address=0, type="uint16", scale=0.1, unit="V"),
    Register(sensor="current", address=1, type="int16", scale=0.01, unit="A"),
    Register(sensor="power", address=2, type="float32", unit="W"),
    # Counts the meter's answers to reads of it: it grows by one per poll.
    Register(sensor="energy", address=4, type="uint32", unit="Wh"),
    Register(sensor="frequency", address=6, type="float64", unit="Hz"),
    Register(sensor="uptime", address=10, type="int64", unit="s"),
    Register(sensor="setpoint", address=20, type="int16", scale=0.5, writable=True),
    Register(sensor="temperature", table="input", address=0, type="int16", scale=0.1, unit="°C"),
    Register(sensor="model", table="input", address=1, type="string", length=4),
    Register(sensor="flow", table="input", address=5, type="uint32", word_order="little"),
    Register(sensor="level", table="input", address=7, type="uint16", byte_order="little"),
    Register(sensor="relay", table="coil", address=0, type="bool", writable=True),
    Register(sensor="door", table="discrete", address=0, type="bool"),
)

_ENERGY = next(r.address for r in METER_REGISTERS if r.sensor == "energy")
_READ_HOLDING = 3
_READ_INPUT = 4
_READ_DISCRETE = 2


def _registers(table: str, values: dict[str, Value]) -> list[int]:
    words = [0] * TABLE_SIZE
    for register in METER_REGISTERS:
        if register.table == table and register.sensor in values:
            start = register.address
            words[start : start + register.words] = encode(register, values[register.sensor])
    return words


class SimulatedMeter:
    """One slave of the simulated bus. Set ``silent`` (no answer at all), ``exception``
    (an exception response to every request) or ``delay`` (seconds before each answer: a
    slow slave) at any time."""

    def __init__(self, slave_id: int, rng: random.Random) -> None:
        self.slave_id = slave_id
        self.silent = False
        self.exception: ExcCodes | None = None
        self.delay = 0.0
        self.answered = 0
        self._rng = rng
        self._energy = 0
        self._voltage = 230.0

    def device(self) -> SimDevice:
        holding = _registers("holding", self._holding_values())
        inputs = _registers("input", {"temperature": 21.5, "model": f"SIM{self.slave_id}"})

        def table(words: list[int]) -> list[SimData]:
            return [SimData(0, values=words, datatype=DataType.REGISTERS)]

        def bits() -> list[SimData]:
            return [SimData(0, values=[False] * TABLE_SIZE, datatype=DataType.BITS)]

        return SimDevice(
            self.slave_id,
            simdata=(bits(), bits(), table(holding), table(inputs)),
            action=self._action,
        )

    def _holding_values(self) -> dict[str, Value]:
        return {
            "voltage": round(self._voltage, 1),
            "current": 1.25,
            "power": self._voltage * 1.25,
            "energy": self._energy,
            "frequency": 50.0,
            "uptime": self._energy * 10,
        }

    async def _action(  # noqa: PLR0917 - pymodbus's SimAction signature
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: Sequence[int] | Sequence[bool] | None,
    ) -> ExcCodes | None:
        if self.silent:
            # pymodbus's server leaves a request for an unknown slave unanswered.
            raise NoSuchIdException(f"slave {self.slave_id} is silent")
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.exception is not None:
            return self.exception
        self.answered += 1
        if function_code == _READ_HOLDING:
            if address <= _ENERGY < address + count:
                self._energy += 1
            self._voltage = min(250.0, max(210.0, self._voltage + self._rng.gauss(0.0, 0.5)))
            fresh = _registers("holding", self._holding_values())
            # Everything but the writable setpoint changes; the setpoint keeps what was set.
            setpoint = next(r for r in METER_REGISTERS if r.sensor == "setpoint").address
            fresh[setpoint] = current_registers[setpoint - start_address]
            current_registers[: len(fresh)] = fresh
        elif function_code == _READ_INPUT:
            values: dict[str, Value] = {
                "temperature": round(21.5 + self._rng.gauss(0.0, 0.2), 1),
                "model": f"SIM{self.slave_id}",
                "flow": self._energy * 3,
                "level": 1000 + self._energy % 100,
            }
            current_registers[:TABLE_SIZE] = _registers("input", values)
        elif function_code == _READ_DISCRETE:
            # The door opens and closes every other read.
            current_registers[0] ^= 1
        return None
