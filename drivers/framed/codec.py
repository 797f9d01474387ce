"""The sans-io codec of binary frames: bytes in, samples and dead letters out.

A microcontroller sends records as frames: the fields packed as a fixed layout (C
struct style, no padding), a CRC of those bytes appended, the whole framed with COBS
(frames end at a ``0x00`` byte, which never occurs inside one) or SLIP (frames end at
``0xC0``; ``0xC0`` and ``0xDB`` inside are escaped). ``FrameDecoder`` is fed whatever
chunk the port returned, in any split, and holds at most ``max_frame_bytes`` of an
unfinished frame. Each frame becomes one sample per field, or one dead letter with its
raw (still framed) bytes: bad framing, a wrong length, a bad CRC. Garbage on the line
costs the frame it falls in; the next delimiter starts afresh (resync).

``FrameCodec.encode`` is what the simulated device sends, so they agree by construction.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import fastcrc
from cobs import cobs

from drivers.delimited import Splitter
from drivers.serial_line.codec import Decoded
from gateway.errors import DriverError
from gateway.reading import DeadLetter, Sample, Value

Framing = Literal["cobs", "slip"]
CrcName = Literal["crc16-ccitt-false", "crc16-modbus", "crc32"]
ByteOrder = Literal["little", "big"]
FieldType = Literal[
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "bool",
]

STRUCT_CODES: Mapping[str, str] = {
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
    "bool": "?",
}

DEFAULT_MAX_FRAME_BYTES = 256

REASON_CRC = "bad CRC"
REASON_TOO_LONG = "frame too long"
REASON_COBS = "bad COBS encoding"
REASON_SLIP = "bad SLIP escape"
REASON_DISCONNECT = "incomplete frame at disconnect"

SLIP_END = 0xC0
SLIP_ESC = 0xDB
SLIP_ESC_END = 0xDC
SLIP_ESC_ESC = 0xDD

# CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) is binascii's crc_hqx; CRC-32 is zlib's;
# CRC-16/MODBUS comes from fastcrc (compiled, maintained; benchmarks/codecs.py measures it).
CRCS: Mapping[str, tuple[int, Callable[[bytes], int]]] = {
    "crc16-ccitt-false": (2, lambda data: binascii.crc_hqx(data, 0xFFFF)),
    "crc16-modbus": (2, fastcrc.crc16.modbus),
    "crc32": (4, zlib.crc32),
}


class _BadFrame(ValueError):
    """A frame that cannot become samples; its message is the dead letter's reason."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of the layout: a sensor, its binary type, and how its value is scaled."""

    name: str
    type: FieldType
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


def slip_encode(data: bytes) -> bytes:
    escaped = data.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    # A leading END flushes line noise received before the frame (RFC 1055).
    return b"\xc0" + escaped + b"\xc0"


def slip_decode(frame: bytes) -> bytes:
    if b"\xdb" not in frame:
        return frame
    out = bytearray()
    escaped = False
    for byte in frame:
        if escaped:
            if byte == SLIP_ESC_END:
                out.append(SLIP_END)
            elif byte == SLIP_ESC_ESC:
                out.append(SLIP_ESC)
            else:
                raise _BadFrame(REASON_SLIP)
            escaped = False
        elif byte == SLIP_ESC:
            escaped = True
        else:
            out.append(byte)
    if escaped:
        raise _BadFrame(REASON_SLIP)
    return bytes(out)


def cobs_decode(frame: bytes) -> bytes:
    try:
        decoded: bytes = cobs.decode(frame)
    except cobs.DecodeError:
        raise _BadFrame(REASON_COBS) from None
    return decoded


class FrameCodec:
    """A frame layout: its fields, byte order, CRC and framing, both ways."""

    def __init__(
        self,
        fields: Sequence[FieldSpec],
        *,
        framing: Framing = "cobs",
        crc: CrcName = "crc16-ccitt-false",
        byte_order: ByteOrder = "little",
    ) -> None:
        if not fields:
            raise ValueError("a frame needs at least one field")
        self.fields = tuple(fields)
        self.framing = framing
        self.byte_order = byte_order
        prefix = "<" if byte_order == "little" else ">"
        self.struct = struct.Struct(prefix + "".join(STRUCT_CODES[f.type] for f in fields))
        self.crc_size, self.crc = CRCS[crc]
        self.payload_size = self.struct.size + self.crc_size
        self.delimiter = b"\x00" if framing == "cobs" else b"\xc0"
        self._unframe = cobs_decode if framing == "cobs" else slip_decode

    @property
    def max_encoded_size(self) -> int:
        """The longest a valid frame can be on the wire, without its delimiter."""
        if self.framing == "cobs":
            return self.payload_size + self.payload_size // 254 + 1
        return 2 * self.payload_size

    def encode(self, values: Sequence[Value]) -> bytes:
        """One frame on the wire, delimiters included, carrying these raw field values."""
        body = self.struct.pack(*values)
        return self.frame(body + self.crc(body).to_bytes(self.crc_size, self.byte_order))

    def frame(self, payload: bytes) -> bytes:
        """``payload`` (fields and CRC) framed for the wire, delimiters included."""
        if self.framing == "cobs":
            encoded: bytes = cobs.encode(payload)
            return encoded + b"\x00"
        return slip_encode(payload)

    def decode(self, frame: bytes) -> tuple[Value, ...]:
        """The raw field values of one frame (without delimiters); ``_BadFrame`` if none."""
        payload = self._unframe(frame)
        if len(payload) != self.payload_size:
            raise _BadFrame(
                f"wrong frame length: expected {self.payload_size} bytes, got {len(payload)}"
            )
        body, given = payload[: self.struct.size], payload[self.struct.size :]
        if int.from_bytes(given, self.byte_order) != self.crc(body):
            raise _BadFrame(REASON_CRC)
        values: tuple[Value, ...] = self.struct.unpack(body)
        return values


class FrameDecoder:
    """Turns a byte stream of frames into samples and dead letters, with a bounded buffer."""

    def __init__(
        self,
        device: str,
        codec: FrameCodec,
        *,
        units: Mapping[str, str] | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if max_frame_bytes < codec.max_encoded_size:
            raise DriverError(
                device,
                f"max_frame_bytes must be at least {codec.max_encoded_size}, the longest a "
                "frame of this layout can be",
            )
        self.device = device
        self.codec = codec
        self.units = {f.name: f.unit for f in codec.fields if f.unit} | dict(units or {})
        self.max_frame_bytes = max_frame_bytes
        self._frames = Splitter(codec.delimiter, max_frame_bytes)
        # Per field: its sensor name, how a raw value becomes the reading's value (None:
        # as it is) and its unit.
        self._fields = [(f.name, _converter(f), self.units.get(f.name)) for f in codec.fields]

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held between feeds (at most max_frame_bytes)."""
        return self._frames.buffered

    def feed(self, data: bytes, ts: float) -> Decoded:
        """Decode a chunk read at time ``ts``; frames it completes get that timestamp."""
        out = Decoded()
        for record in self._frames.feed(data):
            if not record.complete:
                out.dead_letters.append(self._dead(REASON_TOO_LONG, record.data, ts))
                continue
            try:
                values = self.codec.decode(record.data)
            except _BadFrame as exc:
                out.dead_letters.append(self._dead(str(exc), record.data, ts))
                continue
            device = self.device
            # A list comprehension over prepared (name, convert, unit) triples: building
            # the samples is most of this codec's cost (benchmarks/codecs.py).
            out.samples += [
                Sample(device, name, value if convert is None else convert(value), ts, unit)
                for (name, convert, unit), value in zip(self._fields, values, strict=True)
            ]
        return out

    def reset(self, ts: float) -> DeadLetter | None:
        """Forget the unfinished frame (the port closed); returned as a dead letter."""
        tail = self._frames.reset()
        return self._dead(REASON_DISCONNECT, tail, ts) if tail else None

    def _dead(self, reason: str, raw: bytes, ts: float) -> DeadLetter:
        return DeadLetter(device=self.device, reason=reason, raw=raw, ts=ts)


def _converter(spec: FieldSpec) -> Callable[[Value], Value] | None:
    """Raw value → reading: ``raw * scale + offset``; integers and booleans stay as they
    are (None) when neither is set, so a counter is not turned into a float."""
    if spec.type == "bool" or (spec.scale == 1 and spec.offset == 0):
        return None
    scale, offset = spec.scale, spec.offset
    return lambda raw: float(raw) * scale + offset
