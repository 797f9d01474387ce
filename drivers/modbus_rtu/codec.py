"""Register words to values and back, the plan of requests that reads a register map, and
the timing and checks of RTU frames on the wire.

Pure code: no I/O, no pymodbus. The gateway decodes what it read with it, the
simulator encodes its map with it, and writes are encoded with it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import fastcrc

from drivers.modbus_rtu.settings import (
    BIT_TABLES,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    Register,
)

Value = int | float | str | bool

_FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}


def _to_bytes(words: Sequence[int], register: Register) -> bytes:
    ordered = list(words) if register.word_order == "big" else list(reversed(words))
    return b"".join((w & 0xFFFF).to_bytes(2, register.byte_order) for w in ordered)


def _to_words(data: bytes, register: Register) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], register.byte_order) for i in range(0, len(data), 2)]
    return words if register.word_order == "big" else list(reversed(words))


def raw_value(register: Register, words: Sequence[int]) -> Value:
    """The value ``words`` hold, before scale and offset (a coil's words are its bits)."""
    if len(words) != register.words:
        raise ValueError(f"{register.sensor}: {len(words)} words for {register.words}")
    if register.type == "bool":
        return bool(words[0])
    data = _to_bytes(words, register)
    if register.type == "string":
        return data.decode("utf-8", errors="replace").rstrip("\x00 ")
    number: int | float = struct.unpack(">" + _FORMATS[register.type], data)[0]
    return number


def decode(register: Register, words: Sequence[int]) -> Value:
    """The reading's value: ``raw * scale + offset``; an integer stays one when unscaled."""
    raw = raw_value(register, words)
    if isinstance(raw, bool | str):
        return raw
    if register.scale == 1.0 and register.offset == 0.0:
        return raw
    return raw * register.scale + register.offset


def encode_raw(register: Register, raw: Value) -> list[int]:
    """The words (or bits, as 0/1) that hold ``raw``; ValueError if it does not fit."""
    if register.type == "bool":
        if not isinstance(raw, bool):
            raise ValueError(f"{register.sensor} takes true or false, not {raw!r}")
        return [int(raw)]
    if register.type == "string":
        if not isinstance(raw, str):
            raise ValueError(f"{register.sensor} takes a string, not {raw!r}")
        data = raw.encode()
        if len(data) > 2 * register.length:
            raise ValueError(f"{register.sensor} holds at most {2 * register.length} bytes")
        return _to_words(data.ljust(2 * register.length, b"\x00"), register)
    if isinstance(raw, bool | str):
        # ValueError like every other unusable value: callers report them alike.
        raise ValueError(f"{register.sensor} takes a number, not {raw!r}")  # noqa: TRY004
    fmt = _FORMATS[register.type]
    if fmt not in "fd" and isinstance(raw, float):
        if not raw.is_integer():
            raise ValueError(f"{register.sensor} takes a whole number, not {raw!r}")
        raw = int(raw)
    try:
        data = struct.pack(">" + fmt, raw)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{register.sensor}: {raw!r} does not fit {register.type}") from exc
    return _to_words(data, register)


def encode(register: Register, value: Value) -> list[int]:
    """The words that read back as ``value`` (scale and offset undone, rounded to the type)."""
    if isinstance(value, bool | str) or (register.scale == 1.0 and register.offset == 0.0):
        return encode_raw(register, value)
    if not math.isfinite(value):
        raise ValueError(f"{register.sensor}: {value!r} is not a finite number")
    raw = (value - register.offset) / register.scale
    if register.type not in ("float32", "float64"):
        raw = float(round(raw))
    return encode_raw(register, raw)


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers (or bits) of ``table`` from ``address``, made
    every ``interval`` seconds."""

    table: str
    address: int
    count: int
    registers: tuple[Register, ...]
    interval: float = 1.0

    def values(self, words: Sequence[int]) -> list[tuple[Register, Value]]:
        """Each register's value from the block's words (or bits)."""
        out: list[tuple[Register, Value]] = []
        data = b""
        for register in self.registers:
            start = register.address - self.address
            unpack = _BIG_ENDIAN.get(register.type)
            if unpack is None or register.word_order != "big" or register.byte_order != "big":
                out.append((register, decode(register, words[start : start + register.words])))
                continue
            # The common case, unpacked straight from the block's bytes: the same value
            # as decode() gives, at a third of the cost (benchmarks/codecs.py).
            if not data:
                data = b"".join((w & 0xFFFF).to_bytes(2, "big") for w in words)
            raw: int | float = unpack.unpack_from(data, 2 * start)[0]
            if register.scale != 1.0 or register.offset != 0.0:
                raw = raw * register.scale + register.offset
            out.append((register, raw))
        return out


_BIG_ENDIAN = {name: struct.Struct(">" + code) for name, code in _FORMATS.items()}


def plan(registers: Sequence[Register], interval: float = 1.0) -> list[Block]:
    """The requests that read every register once: registers of one table and one poll
    interval (their own ``poll_interval``, else ``interval``) that touch or overlap are
    read together, up to 125 registers or 2000 bits a request. Faster intervals first."""
    every = sorted({r.poll_interval or interval for r in registers})
    return [
        block
        for each in every
        for block in _coalesce(
            [r for r in registers if (r.poll_interval or interval) == each], each
        )
    ]


def _coalesce(registers: Sequence[Register], interval: float) -> list[Block]:
    blocks: list[Block] = []
    for table in ("holding", "input", "coil", "discrete"):
        limit = MAX_READ_BITS if table in BIT_TABLES else MAX_READ_REGISTERS
        members = sorted(
            (r for r in registers if r.table == table), key=lambda r: (r.address, r.words)
        )
        group: list[Register] = []
        start = end = 0
        for register in members:
            r_end = register.address + register.words
            if group and register.address <= end and max(end, r_end) - start <= limit:
                group.append(register)
                end = max(end, r_end)
                continue
            if group:
                blocks.append(Block(table, start, end - start, tuple(group), interval))
            group, start, end = [register], register.address, r_end
        if group:
            blocks.append(Block(table, start, end - start, tuple(group), interval))
    return blocks


# Bits a character takes on the wire by the Modbus spec's reckoning (start, 8 data,
# parity or a second stop, stop), whatever the line's framing: its timings use this.
BITS_PER_CHAR = 11
# Above 19,200 baud the spec fixes the silent interval instead of scaling it (serial
# line guide, 2.5.1.1): 3.5 characters there would be shorter than a UART's timer allows.
FAST_SILENT_INTERVAL = 0.00175
FAST_BAUDRATE = 19200


def char_time(baudrate: int) -> float:
    """Seconds one character takes on the wire."""
    return BITS_PER_CHAR / baudrate


def silent_interval(baudrate: int) -> float:
    """The silence that must separate two frames: 3.5 characters, 1.75 ms above 19,200."""
    if baudrate > FAST_BAUDRATE:
        return FAST_SILENT_INTERVAL
    return 3.5 * char_time(baudrate)


def crc16(frame: bytes) -> int:
    """The Modbus CRC of ``frame`` (CRC-16/MODBUS), sent low byte first."""
    return fastcrc.crc16.modbus(frame)


def with_crc(frame: bytes) -> bytes:
    return frame + crc16(frame).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    """True for a frame of at least 4 bytes whose last two are the CRC of the rest."""
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def read_request(slave: int, block: Block) -> bytes:
    """The RTU frame that reads ``block`` from ``slave``."""
    function = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[block.table]
    body = bytes([slave, function]) + block.address.to_bytes(2, "big")
    return with_crc(body + block.count.to_bytes(2, "big"))


def read_response_size(block: Block) -> int:
    """Bytes of a normal answer to the read of ``block``: slave, function, byte count,
    the data, CRC."""
    data = (block.count + 7) // 8 if block.table in BIT_TABLES else 2 * block.count
    return 5 + data
