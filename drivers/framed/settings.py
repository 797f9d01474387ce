"""The keys of a ``framed`` device: its port, the framing and CRC, and the frame's layout."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from drivers.framed.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    ByteOrder,
    CrcName,
    FieldSpec,
    FieldType,
    FrameCodec,
    Framing,
)
from drivers.serial_port import SerialPortSettings
from gateway.fields import (
    Given,
    Invalid,
    bounded_duration,
    choice,
    key,
    kind_of,
    size,
    string,
    tables,
    text,
)
from gateway.settings import driver_tag


def finite_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"must be a number, not {kind_of(value)}")
    if not math.isfinite(value):
        raise Invalid("must be a finite number")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameField:
    """One ``[[devices.fields]]`` table: a field of the frame, in order."""

    name: str = field(metadata=key(text, "string", "The sensor name of its readings."))
    type: FieldType = field(
        metadata=key(
            choice(get_args(FieldType)),
            "string",
            "Its binary type, packed without padding: `int8`, `uint8`, `int16`, `uint16`, "
            "`int32`, `uint32`, `int64`, `uint64`, `float32`, `float64` (IEEE 754), or "
            "`bool` (one byte, 0 is false).",
        )
    )
    scale: float = field(
        default=1.0,
        metadata=key(
            finite_number,
            "number",
            "The reading is `raw * scale + offset` (a float); with neither set, an integer "
            "stays an integer.",
        ),
    )
    offset: float = field(default=0.0, metadata=key(finite_number, "number", "See `scale`."))
    unit: str = field(
        default="",
        metadata=key(string, "string", "Added to its readings as `unit` (`units` overrides it)."),
    )

    def spec(self) -> FieldSpec:
        return FieldSpec(self.name, self.type, self.scale, self.offset, self.unit)


@dataclass(frozen=True, slots=True, kw_only=True)
class FramedSettings(SerialPortSettings):
    driver: Literal["framed"] = driver_tag("framed")
    framing: Framing = field(
        default="cobs",
        metadata=key(
            choice(get_args(Framing)),
            "string",
            '`"cobs"`: Consistent Overhead Byte Stuffing, each frame ending with a `0x00` '
            'byte. `"slip"`: RFC 1055, each frame ending with `0xC0` (a leading `0xC0` is '
            "allowed).",
        ),
    )
    crc: CrcName = field(
        default="crc16-ccitt-false",
        metadata=key(
            choice(get_args(CrcName)),
            "string",
            'The CRC after the fields, over the fields\' bytes: `"crc16-ccitt-false"` '
            '(poly 0x1021, init 0xFFFF), `"crc16-modbus"` (poly 0x8005 reflected, init '
            '0xFFFF) or `"crc32"` (the zlib/Ethernet CRC), in `byte_order`.',
        ),
    )
    byte_order: ByteOrder = field(
        default="little",
        metadata=key(
            choice(get_args(ByteOrder)),
            "string",
            'Of every multi-byte field and of the CRC: `"little"` (most microcontrollers) '
            'or `"big"`.',
        ),
    )
    fields: tuple[FrameField, ...] = field(
        metadata=tables(
            FrameField,
            "The frame's fields, in order, one `[[devices.fields]]` table each: each gives "
            "one reading per frame.",
        ),
    )
    max_frame_bytes: int = field(
        default=DEFAULT_MAX_FRAME_BYTES,
        metadata=key(
            size(4),
            "size",
            "Longest accepted frame on the wire; a longer run of bytes without a delimiter "
            "is a dead letter, and reading resumes after the next delimiter. Must hold the "
            "longest valid frame of the layout.",
        ),
    )
    read_interval: float = field(
        default=0.018,
        metadata=key(
            bounded_duration(0.0, 1.0),
            "duration",
            "After a read that empties the port, the next read waits this long, so frames "
            "that trickle in are read a chunk at a time. Works as for `serial_line`. Up to "
            '`"1s"`.',
        ),
    )

    def codec(self) -> FrameCodec:
        return FrameCodec(
            [f.spec() for f in self.fields],
            framing=self.framing,
            crc=self.crc,
            byte_order=self.byte_order,
        )

    def cross_check(self, keys: Given) -> Iterator[tuple[str, str]]:
        if not keys.ok("fields"):
            return
        if not self.fields:
            yield "fields", "must hold at least one field ([[devices.fields]] table)"
            return
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            yield "fields", f"names {', '.join(duplicates)} more than once"
        if keys.ok("max_frame_bytes", "framing", "crc"):
            longest = self.codec().max_encoded_size
            if self.max_frame_bytes < longest:
                yield (
                    "max_frame_bytes",
                    f"must be at least {longest}, the longest a frame of these fields can be",
                )
