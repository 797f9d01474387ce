"""The keys of a ``modbus_rtu`` device: its bus, its slave id, and its register map."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from drivers.serial_port import SerialPortSettings
from gateway.fields import (
    Convert,
    Given,
    Invalid,
    boolean,
    bounded_duration,
    choice,
    duration,
    key,
    kind_of,
    string,
    tables,
    text,
)
from gateway.settings import driver_tag

Table = Literal["holding", "input", "coil", "discrete"]
RegisterType = Literal[
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "bool",
    "string",
]
Order = Literal["big", "little"]

# The registers each type takes; a string's count is its `length`.
WORDS: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
    "bool": 1,
}
BIT_TABLES = ("coil", "discrete")
# The most registers one read may ask for (Modbus application protocol, 6.3).
MAX_READ_REGISTERS = 125
# The most coils or discrete inputs one read may ask for (6.1).
MAX_READ_BITS = 2000


def whole(low: int, high: int) -> Convert:
    def convert(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"must be an integer, not {kind_of(value)}")
        if not low <= value <= high:
            raise Invalid(f"must be from {low} to {high} (got {value})")
        return value

    return convert


def number(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Invalid(f"must be a number, not {kind_of(value)}")
    return float(value)


def nonzero_number(value: object) -> float:
    result = number(value)
    if result == 0:
        raise Invalid("must not be 0")
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    """One value of the device's register map: where it is and how it reads."""

    sensor: str = field(
        metadata=key(text, "string", "The `sensor` of its readings; unique within the device.")
    )
    table: Table = field(
        default="holding",
        metadata=key(
            choice(get_args(Table)),
            "string",
            '`"holding"` (read with function 3, written with 6 or 16), `"input"` (4), '
            '`"coil"` (1, written with 5), `"discrete"` (2). Coils and discrete inputs are '
            'of `type = "bool"`.',
        ),
    )
    address: int = field(
        metadata=key(
            whole(0, 65535),
            "integer",
            "The 0-based protocol address (holding register 40001 of a data sheet is address 0).",
        )
    )
    type: RegisterType = field(
        default="uint16",
        metadata=key(
            choice(get_args(RegisterType)),
            "string",
            '`"int16"`, `"uint16"` (one register), `"int32"`, `"uint32"`, `"float32"` (two), '
            '`"int64"`, `"uint64"`, `"float64"` (four), `"bool"` (a coil or discrete input), '
            '`"string"` (`length` registers, two characters each, trailing NULs and spaces '
            "removed).",
        ),
    )
    length: int = field(
        default=0,
        metadata=key(
            whole(1, MAX_READ_REGISTERS),
            "integer",
            f'For `type = "string"` (and required by it): its registers, 1 to '
            f"{MAX_READ_REGISTERS}.",
        ),
    )
    word_order: Order = field(
        default="big",
        metadata=key(
            choice(get_args(Order)),
            "string",
            'For types of two or four registers: `"big"`, the first register holds the most '
            'significant word (the Modbus convention); `"little"`, the least significant.',
        ),
    )
    byte_order: Order = field(
        default="big",
        metadata=key(
            choice(get_args(Order)),
            "string",
            '`"big"`: each register is sent high byte first (the Modbus convention); '
            '`"little"`: low byte first, as some devices do.',
        ),
    )
    scale: float = field(
        default=1.0,
        metadata=key(
            nonzero_number,
            "number",
            "`value = raw * scale + offset`. With scale 1 and offset 0 an integer stays an "
            "integer.",
        ),
    )
    offset: float = field(default=0.0, metadata=key(number, "number", "Added after `scale`."))
    unit: str = field(
        default="", metadata=key(string, "string", "The `unit` of its readings (`V`, `kWh`).")
    )
    writable: bool = field(
        default=False,
        metadata=key(
            boolean,
            "boolean",
            "`true`: the device's `write` may set it (holding registers and coils only); "
            "the value given is converted back through `offset` and `scale`.",
        ),
    )
    poll_interval: float | None = field(
        default=None,
        metadata=key(
            duration(positive=True),
            "duration",
            "How often this register is read, when not at the device's `poll_interval`: "
            "registers of one interval form a block of their own (a slow counter every "
            '`"1m"` beside a fast voltage), and only registers of one interval are read '
            "together in a request.",
        ),
    )

    @property
    def words(self) -> int:
        """How many registers (or, in a bit table, coils) it takes."""
        return self.length if self.type == "string" else WORDS[self.type]

    def cross_check(self, keys: Given) -> Iterator[tuple[str, str]]:
        if keys.ok("type", "length"):
            if self.type == "string" and "length" not in keys.given:
                yield "length", 'required when type = "string"'
            if self.type != "string" and "length" in keys.given:
                yield "length", 'only used with type = "string"'
        if keys.ok("type", "table"):
            bits = self.table in BIT_TABLES
            if bits and self.type != "bool":
                yield "type", f'must be "bool" in table "{self.table}"'
            if not bits and self.type == "bool":
                yield "type", 'is only for table "coil" or "discrete"'
        if keys.ok("writable", "table") and self.writable and self.table not in ("holding", "coil"):
            yield "writable", f'table "{self.table}" is read-only (holding and coil are writable)'
        if keys.ok("address", "type", "length") and self.address + self.words > 65536:
            yield "address", f"{self.address} + {self.words} registers passes the last address"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusRtuSettings(SerialPortSettings):
    driver: Literal["modbus_rtu"] = driver_tag("modbus_rtu")
    slave_id: int = field(
        metadata=key(
            whole(1, 247),
            "integer",
            "The device's address on the bus, 1 to 247. Several devices may share a `port`, "
            "each with its own `slave_id`.",
        )
    )
    poll_interval: float = field(
        default=1.0,
        metadata=key(
            duration(positive=True),
            "duration",
            'How often the registers are read: seconds, or `"500ms"`, `"1s"` (a register may '
            "set its own). A poll that takes longer than this is followed by the next at once.",
        ),
    )
    timeout: float = field(
        default=0.5,
        metadata=key(
            bounded_duration(0.01, 10.0),
            "duration",
            "How long to wait for the device's answer to one request before counting a "
            "timeout. The bus is held that long, so a silent slave costs the others at most "
            "this per attempt.",
        ),
    )
    retry_max: float = field(
        default=30.0,
        metadata=key(
            bounded_duration(0.0, 3600.0),
            "duration",
            "A slave that fails to answer is asked again after `poll_interval`, then twice "
            "that, and so on up to this, so a dead slave takes little of the bus.",
        ),
    )
    registers: tuple[Register, ...] = field(
        metadata=tables(
            Register,
            "The register map, one `[[devices.registers]]` table per value (keys below). "
            "Adjacent registers of one table and one `poll_interval` are read in one request.",
        ),
    )

    def cross_check(self, keys: Given) -> Iterator[tuple[str, str]]:
        if not keys.ok("registers"):
            return
        if not self.registers:
            yield "registers", "must name at least one register"
        seen: set[str] = set()
        for i, register in enumerate(self.registers):
            if register.sensor in seen:
                yield f"registers[{i}].sensor", f'"{register.sensor}" is named twice'
            seen.add(register.sensor)
