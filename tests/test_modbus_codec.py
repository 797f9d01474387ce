"""The Modbus RTU codec and settings: words ↔ values, the request plan, the keys."""

from __future__ import annotations

import math
import random
import struct
import tomllib
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from drivers.modbus_rtu.codec import decode, encode, encode_raw, plan, raw_value
from drivers.modbus_rtu.settings import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    ModbusRtuSettings,
    Register,
)
from gateway.config import parse_config
from gateway.errors import ConfigError

INTEGERS = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
PYMODBUS_TYPES = {
    name: ModbusClientMixin.DATATYPE[name.upper()] for name in [*INTEGERS, "float32", "float64"]
}
orders = st.sampled_from(["big", "little"])


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[str, int | float]:
    kind = draw(st.sampled_from([*INTEGERS, "float32", "float64"]))
    if kind in INTEGERS:
        low, high = INTEGERS[kind]
        return kind, draw(st.integers(low, high))
    if kind == "float32":
        return kind, draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
    return kind, draw(st.floats(allow_nan=False, allow_infinity=False))


@given(typed_values(), orders, orders)
def test_every_numeric_type_round_trips_in_every_order(
    typed: tuple[Any, int | float], word_order: Literal["big", "little"], byte_order: Any
) -> None:
    kind, value = typed
    register = Register(
        sensor="x", address=0, type=kind, word_order=word_order, byte_order=byte_order
    )
    words = encode_raw(register, value)
    assert len(words) == register.words
    assert all(0 <= w <= 0xFFFF for w in words)
    assert raw_value(register, words) == value
    assert type(decode(register, words)) is type(value)
    # pymodbus's own conversion (high byte first) agrees, byte-swapped when asked.
    if byte_order == "little":
        words = [int.from_bytes(w.to_bytes(2, "little"), "big") for w in words]
    theirs = ModbusClientMixin.convert_from_registers(words, PYMODBUS_TYPES[kind], word_order)
    assert theirs == value


@given(st.integers(0, 2**32 - 1))
def test_word_order_swaps_the_words_and_byte_order_the_bytes(value: int) -> None:
    big = encode_raw(Register(sensor="x", address=0, type="uint32"), value)
    little = encode_raw(Register(sensor="x", address=0, type="uint32", word_order="little"), value)
    assert big == [value >> 16, value & 0xFFFF]
    assert little == big[::-1]
    swapped = encode_raw(Register(sensor="x", address=0, type="uint32", byte_order="little"), value)
    assert swapped == [int.from_bytes(w.to_bytes(2, "big"), "little") for w in big]


@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00 "), max_size=8), orders)
def test_strings_round_trip_within_their_length(text: str, word_order: Any) -> None:
    register = Register(sensor="s", address=0, type="string", length=4, word_order=word_order)
    if len(text.encode()) > 8:
        with pytest.raises(ValueError, match="at most 8 bytes"):
            encode_raw(register, text)
        return
    assert raw_value(register, encode_raw(register, text)) == text


@given(
    st.integers(-(2**15), 2**15 - 1),
    st.sampled_from([0.1, 0.01, 2.0, -0.5]),
    st.floats(-1000, 1000),
)
def test_scale_and_offset_apply_both_ways(raw: int, scale: float, offset: float) -> None:
    register = Register(sensor="v", address=0, type="int16", scale=scale, offset=offset)
    words = encode_raw(register, raw)
    value = decode(register, words)
    assert value == pytest.approx(raw * scale + offset)
    assert encode(register, value) == words


def test_values_that_do_not_fit_are_refused() -> None:
    register = Register(sensor="v", address=0, type="uint16", scale=0.1)
    with pytest.raises(ValueError, match="does not fit uint16"):
        encode(register, 6553.6)
    with pytest.raises(ValueError, match="takes a number"):
        encode(register, "high")
    with pytest.raises(ValueError, match="not a finite number"):
        encode(register, math.inf)
    coil = Register(sensor="c", table="coil", address=0, type="bool")
    assert encode(coil, True) == [1]
    with pytest.raises(ValueError, match="true or false"):
        encode(coil, 1)


@st.composite
def register_maps(draw: st.DrawFn) -> list[Register]:
    registers = []
    for i in range(draw(st.integers(1, 60))):
        table: Any = draw(st.sampled_from(["holding", "input", "coil", "discrete"]))
        kind: Any
        if table in ("coil", "discrete"):
            kind, length = "bool", 0
        else:
            kind = draw(st.sampled_from(["uint16", "int32", "float64", "string"]))
            length = draw(st.integers(1, MAX_READ_REGISTERS)) if kind == "string" else 0
        address = draw(st.integers(0, 65536 - max(length, 4)))
        registers.append(
            Register(sensor=f"s{i}", table=table, address=address, type=kind, length=length)
        )
    # Dense runs too, so that coalescing meets its limits.
    start = draw(st.integers(0, 60000))
    registers += [
        Register(sensor=f"run{i}", address=start + 2 * i, type="float32")
        for i in range(draw(st.integers(0, 200)))
    ]
    registers += [
        Register(sensor=f"bit{i}", table="coil", address=start + i, type="bool")
        for i in range(draw(st.integers(0, 2500)))
    ]
    return registers


@given(register_maps())
def test_the_plan_reads_every_register_once_within_the_request_limits(
    registers: list[Register],
) -> None:
    blocks = plan(registers)
    seen: list[str] = []
    for block in blocks:
        limit = MAX_READ_BITS if block.table in ("coil", "discrete") else MAX_READ_REGISTERS
        assert 1 <= block.count <= limit
        for register in block.registers:
            assert register.table == block.table
            assert block.address <= register.address
            assert register.address + register.words <= block.address + block.count
            seen.append(register.sensor)
    assert sorted(seen) == sorted(r.sensor for r in registers)


def test_adjacent_registers_share_a_request_and_gaps_split_them() -> None:
    run = [Register(sensor=f"r{i}", address=i, type="uint16") for i in range(300)]
    assert [(b.address, b.count) for b in plan(run)] == [(0, 125), (125, 125), (250, 50)]
    coils = [Register(sensor=f"c{i}", table="coil", address=i, type="bool") for i in range(2001)]
    assert [(b.address, b.count) for b in plan(coils)] == [(0, 2000), (2000, 1)]
    gap = [
        Register(sensor="a", address=0, type="float32"),
        Register(sensor="b", address=2, type="uint16"),
        Register(sensor="c", address=10, type="uint16"),
        Register(sensor="d", table="input", address=3, type="uint16"),
    ]
    assert [(b.table, b.address, b.count) for b in plan(gap)] == [
        ("holding", 0, 3),
        ("holding", 10, 1),
        ("input", 3, 1),
    ]
    (first, *_) = plan(gap)
    words = [*struct.unpack(">HH", struct.pack(">f", 1.5)), 7]
    assert first.values(words) == [(gap[0], 1.5), (gap[1], 7)]


CONFIG = """
[[devices]]
id = "meter-1"
driver = "modbus_rtu"
port = "/dev/ttyUSB0"
slave_id = 1
poll_interval = "500ms"

[[devices.registers]]
sensor = "voltage"
address = 0
scale = 0.1
unit = "V"

[[devices]]
id = "meter-2"
driver = "modbus_rtu"
port = "/dev/ttyUSB0"
slave_id = 248
poll_interval = "soon"

[[devices.registers]]
sensor = "voltage"
address = 0

[[devices.registers]]
sensor = "name"
table = "input"
address = 3
type = "string"

[[devices.registers]]
sensor = "voltage"
table = "discrete"
address = 65535
type = "unit32"
writable = true

[[devices.registers]]
sensor = "alarm"
table = "input"
address = 1
type = "bool"
length = 2
"""


def test_keys_are_read_and_every_bad_one_is_named_by_its_path() -> None:
    data = tomllib.loads(CONFIG)
    with pytest.raises(ConfigError) as info:
        parse_config(data, None)
    assert [str(p) for p in info.value.problems] == [
        "devices[1].slave_id: must be from 1 to 247 (got 248)",
        "devices[1].poll_interval: must be a duration: seconds as a number, or a string like "
        '"500ms", "30s", "5m", "2h", "7d"',
        'devices[1].registers[1].length: required when type = "string"',
        'devices[1].registers[2].type: must be one of "int16", "uint16", "int32", "uint32", '
        '"int64", "uint64", "float32", "float64", "bool", "string" (got "unit32") '
        '(did you mean "uint32"?)',
        'devices[1].registers[2].writable: table "discrete" is read-only (holding and coil '
        "are writable)",
        'devices[1].registers[3].length: only used with type = "string"',
        'devices[1].registers[3].type: is only for table "coil" or "discrete"',
    ]
    del data["devices"][1]
    (meter,) = parse_config(data, None).devices
    assert isinstance(meter, ModbusRtuSettings)
    assert meter.poll_interval == 0.5
    assert meter.registers == (Register(sensor="voltage", address=0, scale=0.1, unit="V"),)


def test_a_map_names_each_sensor_once_and_fits_the_address_space() -> None:
    device = tomllib.loads(CONFIG)["devices"][0]
    device["registers"] += [
        {"sensor": "voltage", "address": 1},
        {"sensor": "big", "address": 65534, "type": "float64"},
    ]
    with pytest.raises(ConfigError) as info:
        parse_config({"devices": [device]}, None)
    assert [str(p) for p in info.value.problems] == [
        "devices[0].registers[2].address: 65534 + 4 registers passes the last address"
    ]
    device["registers"].pop()
    with pytest.raises(ConfigError) as info:
        parse_config({"devices": [device]}, None)
    assert [str(p) for p in info.value.problems] == [
        'devices[0].registers[1].sensor: "voltage" is named twice'
    ]


@st.composite
def dense_maps(draw: st.DrawFn) -> list[Register]:
    """Registers of every type and order packed into a few addresses, overlaps allowed."""
    registers = []
    for i in range(draw(st.integers(1, 12))):
        kind: Any = draw(st.sampled_from([*INTEGERS, "float32", "float64", "string"]))
        word_order: Any = draw(orders)
        byte_order: Any = draw(orders)
        registers.append(
            Register(
                sensor=f"s{i}",
                table=draw(st.sampled_from(["holding", "input"])),
                address=draw(st.integers(0, 20)),
                type=kind,
                length=draw(st.integers(1, 4)) if kind == "string" else 0,
                word_order=word_order,
                byte_order=byte_order,
                scale=draw(st.sampled_from([1.0, 0.1, -2.0])),
                offset=draw(st.sampled_from([0.0, 5.5])),
            )
        )
    return registers


@given(dense_maps(), st.randoms(use_true_random=False))
def test_a_block_decodes_each_register_as_decode_does(
    registers: list[Register], rng: random.Random
) -> None:
    for block in plan(registers):
        words = [rng.randrange(65536) for _ in range(block.count)]
        for register, value in block.values(words):
            start = register.address - block.address
            expected = decode(register, words[start : start + register.words])
            assert value == expected or (math.isnan(value) and math.isnan(expected))  # type: ignore[arg-type]
