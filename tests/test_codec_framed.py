"""The frame codec alone: framings, CRCs, layouts, bounded buffer, resync, any chunking."""

from __future__ import annotations

import random
import struct
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.framed.codec import (
    REASON_COBS,
    REASON_CRC,
    REASON_DISCONNECT,
    REASON_SLIP,
    REASON_TOO_LONG,
    ByteOrder,
    CrcName,
    FieldSpec,
    FieldType,
    FrameCodec,
    FrameDecoder,
    Framing,
    slip_decode,
    slip_encode,
)
from drivers.framed.device import FramedSource
from gateway.errors import DriverError
from gateway.reading import DeadLetter, Sample, Value

TS = 1764086400.5
FIELDS = (
    FieldSpec("n", "uint32"),
    FieldSpec("t", "int16", scale=0.01, unit="°C"),
    FieldSpec("p", "float32"),
    FieldSpec("ok", "bool"),
)
COMBOS = [
    (framing, crc, order)
    for framing in ("cobs", "slip")
    for crc in ("crc16-ccitt-false", "crc16-modbus", "crc32")
    for order in ("little", "big")
]


def pairs(samples: list[Sample]) -> list[tuple[str, Value]]:
    return [(s.sensor, s.value) for s in samples]


def test_known_crc_check_values() -> None:
    """The catalogue's check values of "123456789" (reveng.sourceforge.io)."""
    check = b"123456789"
    for name, expected in [
        ("crc16-ccitt-false", 0x29B1),
        ("crc16-modbus", 0x4B37),
        ("crc32", 0xCBF43926),
    ]:
        codec = FrameCodec([FieldSpec("x", "uint8")], crc=name)  # type: ignore[arg-type]
        assert codec.crc(check) == expected, name


def test_cobs_frame_little_endian_ccitt() -> None:
    codec = FrameCodec(FIELDS)
    wire = codec.encode((7, -1234, 1.5, True))
    assert wire.endswith(b"\x00")
    assert wire.count(b"\x00") == 1
    out = FrameDecoder("node-1", codec).feed(wire, TS)
    assert out.dead_letters == []
    assert pairs(out.samples) == [("n", 7), ("t", pytest.approx(-12.34)), ("p", 1.5), ("ok", True)]
    assert isinstance(out.samples[0].value, int)
    assert [s.unit for s in out.samples] == [None, "°C", None, None]
    assert {(s.device, s.ts) for s in out.samples} == {("node-1", TS)}


def test_layout_by_hand_slip_modbus_big_endian() -> None:
    """A frame as a device's firmware would build it, byte by byte."""
    body = struct.pack(">Hh", 0xC0DB, -2)
    crc = FrameCodec([FieldSpec("x", "uint8")], crc="crc16-modbus").crc(body)
    payload = body + crc.to_bytes(2, "big")
    wire = b"\xc0" + payload.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"
    codec = FrameCodec(
        [FieldSpec("a", "uint16"), FieldSpec("b", "int16", offset=100.0)],
        framing="slip",
        crc="crc16-modbus",
        byte_order="big",
    )
    out = FrameDecoder("d", codec, units={"b": "kPa"}).feed(wire, TS)
    assert pairs(out.samples) == [("a", 0xC0DB), ("b", 98.0)]
    assert out.samples[1].unit == "kPa"


def test_bad_crc_length_and_framing_are_dead_letters_then_resync() -> None:
    codec = FrameCodec(FIELDS)
    good = codec.encode((1, 0, 0.0, False))
    body = codec.struct.pack(2, 0, 0.0, False)
    bad_crc = codec.frame(body + b"\x00\x00")
    short = codec.frame(b"\x01\x02\x03")
    data = b"\x13\x37garbage\x00" + good + bad_crc + short + b"\x05\x01\x00" + good
    # Noise with no delimiter of its own runs into the next frame: both are lost.
    data += b"\x13\x37" + good + good
    out = FrameDecoder("d", codec).feed(data, TS)
    assert [(d.reason, d.raw) for d in out.dead_letters] == [
        (REASON_COBS, b"\x13\x37garbage"),
        (REASON_CRC, bad_crc[:-1]),
        ("wrong frame length: expected 13 bytes, got 3", short[:-1]),
        (REASON_COBS, b"\x05\x01"),
        (REASON_COBS, b"\x13\x37" + good[:-1]),
    ]
    assert [v for k, v in pairs(out.samples) if k == "n"] == [1, 1, 1]


def test_slip_escapes() -> None:
    data = bytes(range(256))
    assert slip_decode(slip_encode(data)[1:-1]) == data
    codec = FrameCodec([FieldSpec("x", "uint8")], framing="slip")
    out = FrameDecoder("d", codec).feed(b"\xdb\x01\xc0\x01\x02\x03\xdb\xc0", TS)
    assert [d.reason for d in out.dead_letters] == [REASON_SLIP, REASON_SLIP]


def test_overlong_run_is_one_dead_letter_and_the_buffer_stays_bounded() -> None:
    codec = FrameCodec(FIELDS)
    decoder = FrameDecoder("d", codec, max_frame_bytes=64)
    dead: list[DeadLetter] = []
    for _ in range(1000):
        dead += decoder.feed(b"\x01" * 1000, TS).dead_letters
        assert decoder.buffered <= 64
    assert [(d.reason, len(d.raw)) for d in dead] == [(REASON_TOO_LONG, 64)]
    out = decoder.feed(b"\x00" + codec.encode((9, 0, 0.0, True)), TS)
    assert out.dead_letters == []
    assert pairs(out.samples)[0] == ("n", 9)


def test_reset_and_bounds() -> None:
    codec = FrameCodec(FIELDS)
    decoder = FrameDecoder("d", codec)
    wire = codec.encode((1, 2, 3.0, False))
    decoder.feed(wire[:5], TS)
    assert decoder.reset(TS + 1) == DeadLetter("d", REASON_DISCONNECT, wire[:5], TS + 1)
    assert decoder.reset(TS) is None
    with pytest.raises(DriverError, match="max_frame_bytes must be at least 14"):
        FrameDecoder("d", codec, max_frame_bytes=10)
    with pytest.raises(ValueError, match="at least one field"):
        FrameCodec([])


def test_simulated_garbage_is_noise_then_a_bad_crc() -> None:
    source = FramedSource(random.Random(5))
    decoder = FrameDecoder("d", source.codec)
    out = decoder.feed(source.line() + source.garbage() + source.line(), TS)
    assert [v for k, v in pairs(out.samples) if k == "n"] == [1, 2]
    assert [d.reason for d in out.dead_letters][-1] == REASON_CRC
    assert len(out.dead_letters) == 2


# Hypothesis: round trip, any split, random bytes --------------------------------

RANGES: dict[str, st.SearchStrategy[Value]] = {
    "int8": st.integers(-(2**7), 2**7 - 1),
    "uint8": st.integers(0, 2**8 - 1),
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "float32": st.floats(width=32, allow_nan=False),
    "float64": st.floats(allow_nan=False),
    "bool": st.booleans(),
}


@st.composite
def layouts(draw: st.DrawFn) -> tuple[FrameCodec, list[Value]]:
    types: list[FieldType] = draw(
        st.lists(st.sampled_from(get_args(FieldType)), min_size=1, max_size=8)
    )
    framing, crc, order = draw(st.sampled_from(COMBOS))
    codec = FrameCodec(
        [FieldSpec(f"f{i}", t) for i, t in enumerate(types)],
        framing=framing,  # type: ignore[arg-type]
        crc=crc,  # type: ignore[arg-type]
        byte_order=order,  # type: ignore[arg-type]
    )
    return codec, [draw(RANGES[t]) for t in types]


@settings(max_examples=300, deadline=None)
@given(layout=layouts())
def test_encoded_frames_round_trip(layout: tuple[FrameCodec, list[Value]]) -> None:
    codec, values = layout
    out = FrameDecoder("d", codec).feed(codec.encode(values), TS)
    assert out.dead_letters == []
    assert [s.value for s in out.samples] == values


@st.composite
def streams(draw: st.DrawFn) -> tuple[FrameCodec, bytes]:
    """Simulated frames of one layout, with noise, bad CRCs and overlong runs between them."""
    framing, crc, order = draw(st.sampled_from(COMBOS))
    codec = FrameCodec(
        FIELDS,
        framing=framing,  # type: ignore[arg-type]
        crc=crc,  # type: ignore[arg-type]
        byte_order=order,  # type: ignore[arg-type]
    )
    source = FramedSource(random.Random(draw(st.integers(0, 2**32))), codec=codec)
    parts = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["frame", "frame", "frame", "garbage", "noise", "long"]))
        if kind == "frame":
            parts.append(source.line())
        elif kind == "garbage":
            parts.append(source.garbage())
        elif kind == "noise":
            parts.append(draw(st.binary(max_size=30)) + codec.delimiter)
        else:
            parts.append(b"\x01" * draw(st.integers(70, 200)) + codec.delimiter)
    return codec, b"".join(parts)


def decode_all(
    codec: FrameCodec, data: bytes, cuts: list[int]
) -> tuple[list[tuple[str, Value]], list[DeadLetter]]:
    decoder = FrameDecoder("d", codec, max_frame_bytes=64)
    samples: list[Sample] = []
    dead: list[DeadLetter] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out = decoder.feed(data[start:cut], TS)
        samples += out.samples
        dead += out.dead_letters
        start = max(start, cut)
        assert decoder.buffered <= 64
    return pairs(samples), dead


@settings(max_examples=200, deadline=None)
@given(stream=streams(), cut_points=st.lists(st.integers(0, 3000), max_size=20))
def test_any_split_gives_the_same_result(
    stream: tuple[FrameCodec, bytes], cut_points: list[int]
) -> None:
    codec, data = stream
    cuts = [c % (len(data) + 1) for c in cut_points]
    assert decode_all(codec, data, cuts) == decode_all(codec, data, [])


@settings(max_examples=50, deadline=None)
@given(stream=streams())
def test_byte_by_byte_gives_the_same_result(stream: tuple[FrameCodec, bytes]) -> None:
    codec, data = stream
    assert decode_all(codec, data, list(range(len(data)))) == decode_all(codec, data, [])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), combo=st.sampled_from(COMBOS))
def test_random_bytes_never_raise_and_stay_bounded(
    data: bytes, combo: tuple[Framing, CrcName, ByteOrder]
) -> None:
    framing, crc, order = combo
    codec = FrameCodec(FIELDS, framing=framing, crc=crc, byte_order=order)
    decoder = FrameDecoder("d", codec, max_frame_bytes=40)
    out = decoder.feed(data, TS)
    assert decoder.buffered <= 40
    assert all(len(d.raw) <= 40 for d in out.dead_letters)
