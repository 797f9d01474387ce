"""The line codec alone: formats, dead letters, bounded buffer, any chunking."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.serial_line.codec import (
    REASON_DISCONNECT,
    REASON_NUL,
    REASON_TOO_LONG,
    REASON_UTF8,
    LineDecoder,
    encode_kv,
    parse_value,
)
from drivers.serial_line.settings import LineFormat, SerialLineSettings
from gateway.errors import DriverError
from gateway.reading import DeadLetter, Sample, Value

TS = 1764086400.5


def pairs(samples: list[Sample]) -> list[tuple[str, Value]]:
    return [(s.sensor, s.value) for s in samples]


def reasons(dead: list[DeadLetter]) -> list[str]:
    return [d.reason for d in dead]


def test_kv_spaces_commas_and_types() -> None:
    codec = LineDecoder("thermo-1", "kv", units={"t": "°C"})
    out = codec.feed(b"t=21.5 h=40.2,n=7, s=ok  x=-3e2\n", TS)
    assert pairs(out.samples) == [("t", 21.5), ("h", 40.2), ("n", 7), ("s", "ok"), ("x", -300.0)]
    assert isinstance(out.samples[2].value, int)
    assert out.samples[0].unit == "°C"
    assert out.samples[1].unit is None
    assert {s.device for s in out.samples} == {"thermo-1"}
    assert {s.ts for s in out.samples} == {TS}
    assert out.dead_letters == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        ("-4", -4),
        ("+4", 4),
        ("1.50", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("1_000", "1_000"),
        ("0x10", "0x10"),
        ("on", "on"),
        ("", ""),
        ("12abc", "12abc"),
        ("--1", "--1"),
    ],
)
def test_parse_value(text: str, expected: Value) -> None:
    value = parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_nan_and_inf_are_floats() -> None:
    assert math.isnan(float(parse_value("nan")))
    assert parse_value("-inf") == -math.inf


def test_line_endings_lf_crlf_cr() -> None:
    codec = LineDecoder("d")
    out = codec.feed(b"a=1\nb=2\r\nc=3\rd=4\n", TS)
    assert pairs(out.samples) == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    assert out.dead_letters == []


def test_crlf_split_across_chunks_gives_no_dead_letter() -> None:
    codec = LineDecoder("d")
    first = codec.feed(b"a=1\r", TS)
    second = codec.feed(b"\nb=2\r\n", TS)
    assert pairs(first.samples + second.samples) == [("a", 1), ("b", 2)]
    assert first.dead_letters == second.dead_letters == []


@pytest.mark.parametrize(("fmt", "line"), [("kv", b"a=1"), ("csv", b"1,2"), ("json", b'{"a":1}')])
def test_blank_lines_are_skipped(fmt: LineFormat, line: bytes) -> None:
    codec = LineDecoder("d", fmt, columns=("a", "b"))
    out = codec.feed(b"\n\n  \n\r\n \t \n" + line + b"\n", TS)
    assert pairs(out.samples)[0] == ("a", 1)
    assert out.dead_letters == []


def test_bad_lines_between_good_ones() -> None:
    codec = LineDecoder("d")
    out = codec.feed(b"a=1\nhello\nb=2\n=5\nc=\nd=3\n", TS)
    assert pairs(out.samples) == [("a", 1), ("b", 2), ("d", 3)]
    assert [d.raw for d in out.dead_letters] == [b"hello", b"=5", b"c="]
    assert all(r.startswith("bad pair: ") for r in reasons(out.dead_letters))


def test_a_bad_pair_refuses_the_whole_line() -> None:
    out = LineDecoder("d").feed(b"t=1 oops h=2\n", TS)
    assert out.samples == []
    assert out.dead_letters == [
        DeadLetter("d", "bad pair: 'oops' (expected key=value)", b"t=1 oops h=2", TS)
    ]


def test_nul_and_invalid_utf8_keep_raw_bytes() -> None:
    codec = LineDecoder("d")
    out = codec.feed(b"a=1\x00\n\xff\xfe=1\nb=2\n", TS)
    assert pairs(out.samples) == [("b", 2)]
    assert [(d.reason, d.raw) for d in out.dead_letters] == [
        (REASON_NUL, b"a=1\x00"),
        (REASON_UTF8, b"\xff\xfe=1"),
    ]


def test_utf8_keys_and_values() -> None:
    out = LineDecoder("d").feed("température=21 état=marche\n".encode(), TS)
    assert pairs(out.samples) == [("température", 21), ("état", "marche")]


def test_overlong_complete_line_is_one_dead_letter() -> None:
    codec = LineDecoder("d", max_line_bytes=8)
    out = codec.feed(b"a=123456789\nb=1\n", TS)
    assert pairs(out.samples) == [("b", 1)]
    assert out.dead_letters == [DeadLetter("d", REASON_TOO_LONG, b"a=123456", TS)]


def test_line_of_exactly_max_bytes_is_accepted() -> None:
    codec = LineDecoder("d", max_line_bytes=8)
    assert pairs(codec.feed(b"a=123456\n", TS).samples) == [("a", 123456)]


def test_megabyte_without_newline_stays_bounded_then_resyncs() -> None:
    codec = LineDecoder("d", max_line_bytes=4096)
    dead: list[DeadLetter] = []
    chunk = bytes(range(1, 256)).replace(b"\n", b"").replace(b"\r", b"") * 4
    fed = 0
    while fed < 1024 * 1024:
        out = codec.feed(chunk, TS)
        assert out.samples == []
        dead += out.dead_letters
        fed += len(chunk)
        assert codec.buffered <= 4096
    assert len(dead) == 1
    assert dead[0].reason == REASON_TOO_LONG
    assert len(dead[0].raw) == 4096
    assert dead[0].raw == (chunk * 5)[:4096]
    # The rest of the long line up to its end is discarded; the next line is read.
    out = codec.feed(b"tail of the long line\nn=1\n", TS)
    assert pairs(out.samples) == [("n", 1)]
    assert out.dead_letters == []


def test_megabyte_in_one_chunk() -> None:
    codec = LineDecoder("d", max_line_bytes=100)
    out = codec.feed(b"x" * (1024 * 1024) + b"\nn=1\n" + b"y" * 5000, TS)
    assert pairs(out.samples) == [("n", 1)]
    assert [(d.reason, len(d.raw)) for d in out.dead_letters] == [
        (REASON_TOO_LONG, 100),
        (REASON_TOO_LONG, 100),
    ]
    assert codec.buffered == 0


def test_reset_returns_unfinished_line() -> None:
    codec = LineDecoder("d")
    codec.feed(b"n=1\nn=", TS)
    assert codec.buffered == 2
    assert codec.reset(TS + 1) == DeadLetter("d", REASON_DISCONNECT, b"n=", TS + 1)
    assert codec.buffered == 0
    assert codec.reset(TS) is None
    assert pairs(codec.feed(b"2\nn=3\n", TS).samples) == [("n", 3)]


def test_csv_columns_header_and_count() -> None:
    codec = LineDecoder("d", "csv", columns=("t", "h", "s"), units={"h": "%"})
    out = codec.feed(b"t,h,s\n21.5, 40 ,ok\n1,2\n3,,x\n1,2,3,4\n", TS)
    assert pairs(out.samples) == [("t", 21.5), ("h", 40), ("s", "ok"), ("t", 3), ("s", "x")]
    assert out.samples[1].unit == "%"
    assert [(d.reason, d.raw) for d in out.dead_letters] == [
        ("wrong column count: expected 3, got 2", b"1,2"),
        ("wrong column count: expected 3, got 4", b"1,2,3,4"),
    ]


def test_json_objects_flatten_and_refusals() -> None:
    codec = LineDecoder("d", "json", units={"gps.lat": "deg"})
    out = codec.feed(
        b'{"t": 21.5, "ok": true, "mode": "eco", "n": 3, "gps": {"lat": 48.1}, "x": null}\n'
        b"[1, 2]\n"
        b'{"a": [1]}\n'
        b"{not json\n"
        b'{"": 1}\n'
        b'"str"\n',
        TS,
    )
    assert pairs(out.samples) == [
        ("t", 21.5),
        ("ok", True),
        ("mode", "eco"),
        ("n", 3),
        ("gps.lat", 48.1),
    ]
    assert out.samples[4].unit == "deg"
    got = reasons(out.dead_letters)
    assert got[0] == "not a JSON object"
    assert got[1] == "array value for 'a'"
    assert got[2].startswith("invalid JSON: ")
    assert got[3] == "empty sensor name"
    assert got[4] == "not a JSON object"


def test_json_deep_nesting_is_a_dead_letter() -> None:
    codec = LineDecoder("d", "json", max_line_bytes=1_000_000)
    out = codec.feed(b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n", TS)
    assert out.samples == []
    assert len(out.dead_letters) == 1


def test_from_settings_and_invalid_settings() -> None:
    settings = SerialLineSettings(
        id="dev", port="/dev/x", format="csv", columns=("a",), max_line_bytes=10
    )
    codec = LineDecoder.from_settings(settings)
    assert (codec.device, codec.format, codec.columns, codec.max_line_bytes) == (
        "dev",
        "csv",
        ("a",),
        10,
    )
    with pytest.raises(DriverError, match="needs columns"):
        LineDecoder("dev", "csv")
    with pytest.raises(DriverError, match="max_line_bytes"):
        LineDecoder("dev", max_line_bytes=0)


def test_encode_kv_refuses_what_cannot_round_trip() -> None:
    assert encode_kv([("t", 21.53), ("h", 40.2), ("n", 3), ("s", "ok")]) == (
        b"t=21.53 h=40.2 n=3 s=ok\n"
    )
    for bad in ([("a b", 1)], [("a", "x y")], [("a", "1")], [("", 1)], [("k=", 1)], []):
        with pytest.raises(ValueError, match="kv"):
            encode_kv(bad)
    with pytest.raises(TypeError, match="bool"):
        encode_kv([("on", True)])


# Keys and string values an encoder can write: no separators, not number-like.
keys = st.text(
    st.characters(blacklist_categories=("Z", "C"), blacklist_characters=",="),
    min_size=1,
    max_size=8,
)
words = st.text(
    st.characters(blacklist_categories=("Z", "C"), blacklist_characters=","),
    min_size=1,
    max_size=8,
).filter(lambda w: parse_value(w) == w)
values = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    words,
)
line_pairs = st.lists(st.tuples(keys, values), min_size=1, max_size=5)
garbage = st.binary(max_size=40)
endings = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Valid kv lines mixed with garbage, overlong and blank lines, any line endings."""
    parts = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["kv", "kv", "garbage", "long", "blank"]))
        if kind == "kv":
            body = encode_kv(draw(line_pairs))[:-1]
        elif kind == "garbage":
            body = draw(garbage).replace(b"\n", b"").replace(b"\r", b"")
        elif kind == "long":
            body = b"k=" + b"9" * draw(st.integers(60, 200))
        else:
            body = b""
        parts.append(body + draw(endings))
    return b"".join(parts)


def decode_all(data: bytes, cuts: list[int]) -> tuple[list[tuple[str, Value]], list[DeadLetter]]:
    codec = LineDecoder("d", max_line_bytes=64)
    samples: list[Sample] = []
    dead: list[DeadLetter] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out = codec.feed(data[start:cut], TS)
        samples += out.samples
        dead += out.dead_letters
        start = max(start, cut)
        assert codec.buffered <= 64
    return pairs(samples), dead


@settings(max_examples=300, deadline=None)
@given(data=streams(), cut_points=st.lists(st.integers(0, 2000), max_size=20))
def test_any_chunking_gives_the_same_result(data: bytes, cut_points: list[int]) -> None:
    cuts = [c % (len(data) + 1) for c in cut_points]
    assert decode_all(data, cuts) == decode_all(data, [])


@settings(max_examples=100, deadline=None)
@given(data=streams())
def test_byte_by_byte_gives_the_same_result(data: bytes) -> None:
    assert decode_all(data, list(range(len(data)))) == decode_all(data, [])


@settings(max_examples=300, deadline=None)
@given(line=line_pairs)
def test_encode_kv_round_trips(line: list[tuple[str, Value]]) -> None:
    out = LineDecoder("d", max_line_bytes=10_000).feed(encode_kv(line), TS)
    assert out.dead_letters == []
    assert pairs(out.samples) == line


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_and_stay_bounded(data: bytes) -> None:
    for fmt in ("kv", "json"):
        codec = LineDecoder("d", fmt, max_line_bytes=32)
        out = codec.feed(data, TS)
        assert codec.buffered <= 32
        assert all(len(d.raw) <= 32 for d in out.dead_letters)
