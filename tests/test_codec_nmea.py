"""The NMEA codec alone: sentences, talkers, checksums, bounded buffer, any chunking."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.nmea.codec import (
    REASON_ASCII,
    REASON_CHECKSUM,
    REASON_DISCONNECT,
    REASON_NO_CHECKSUM,
    REASON_NOT_SENTENCE,
    REASON_TOO_LONG,
    Fix,
    NmeaDecoder,
    checksum,
    encode_sentence,
)
from drivers.nmea.device import GpsSource
from gateway.errors import DriverError
from gateway.reading import DeadLetter, Sample, Value

TS = 1764086400.5

# The textbook examples (NMEA 0183 references and receiver manuals).
GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"
RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"


def pairs(samples: list[Sample]) -> list[tuple[str, Value]]:
    return [(s.sensor, s.value) for s in samples]


def with_talker(sentence: bytes, talker: str) -> bytes:
    body = sentence[1 : sentence.rindex(b"*")]
    return b"$%s%s*%02X\r\n" % (talker.encode(), body[2:], checksum(talker.encode() + body[2:]))


def test_gga_gives_position_and_quality() -> None:
    out = NmeaDecoder("gps-1").feed(GGA, TS)
    assert out.dead_letters == []
    got = dict(pairs(out.samples))
    assert got == {
        "fix_quality": 1,
        "lat": pytest.approx(48.1173),
        "lon": pytest.approx(11.0 + 31.0 / 60),
        "satellites": 8,
        "hdop": 0.9,
        "altitude": 545.4,
        "geoid_separation": 46.9,
    }
    units = {s.sensor: s.unit for s in out.samples}
    assert units["lat"] == units["lon"] == "°"
    assert units["altitude"] == "m"
    assert {s.ts for s in out.samples} == {TS}
    assert {s.device for s in out.samples} == {"gps-1"}


def test_rmc_gives_utc_speed_and_course() -> None:
    got = dict(pairs(NmeaDecoder("g").feed(RMC, TS).samples))
    # 23 March 1994, 12:35:19 UTC
    assert got["utc"] == 764426119.0
    assert got["speed"] == pytest.approx(22.4 * 1852 / 3600, abs=1e-4)
    assert got["course"] == 84.4
    assert got["lat"] == pytest.approx(48.1173)


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "BD", "GB", "GQ", "QZ"])
def test_every_talker_is_read(talker: str) -> None:
    out = NmeaDecoder("g").feed(with_talker(GGA, talker) + with_talker(RMC, talker), TS)
    assert out.dead_letters == []
    assert [v for k, v in pairs(out.samples) if k == "lat"] == [pytest.approx(48.1173)] * 2


def test_south_and_west_are_negative() -> None:
    fields = ["010203.00", "3351.6500", "S", "15112.3400", "W", "1", "05", "1.2", "10.0", "M"]
    fields += ["", "M", "", ""]
    got = dict(pairs(NmeaDecoder("g").feed(encode_sentence("GNGGA", fields), TS).samples))
    assert got["lat"] == pytest.approx(-(33 + 51.65 / 60))
    assert got["lon"] == pytest.approx(-(151 + 12.34 / 60))


def test_no_fix_gives_no_position() -> None:
    no_fix_gga = encode_sentence(
        "GPGGA", ["123519", "", "", "", "", "0", "00", "", "", "M"] + [""] * 4
    )
    void_rmc = encode_sentence(
        "GPRMC", ["123519", "V", "", "", "", "", "", "", "230394", "", "", "N"]
    )
    out = NmeaDecoder("g").feed(no_fix_gga + void_rmc, TS)
    assert out.dead_letters == []
    assert pairs(out.samples) == [("fix_quality", 0), ("satellites", 0), ("utc", 764426119.0)]


def test_vtg_gsa_gsv_zda_gll() -> None:
    data = (
        b"$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48\r\n"
        + encode_sentence("GNGSA", ["A", "3", "04", "05", *[""] * 10, "2.5", "1.3", "2.1"])
        + encode_sentence("GLGSV", ["2", "1", "07", "65", "44", "123", "33"])
        + encode_sentence("GLGSV", ["2", "2", "07", "66", "12", "004", "30"])
        + encode_sentence("GPZDA", ["201530.00", "04", "07", "2002", "00", "00"])
        + encode_sentence("GAGLL", ["4916.45", "N", "12311.12", "W", "225444", "A", "A"])
    )
    out = NmeaDecoder("g").feed(data, TS)
    assert out.dead_letters == []
    assert pairs(out.samples) == [
        ("course", 54.7),
        ("speed", pytest.approx(10.2 / 3.6, abs=1e-4)),
        ("fix_mode", 3),
        ("pdop", 2.5),
        ("hdop", 1.3),
        ("vdop", 2.1),
        ("satellites_in_view.GL", 7),
        ("utc", 1025813730.0),  # 4 July 2002, 20:15:30
        ("lat", pytest.approx(49 + 16.45 / 60)),
        ("lon", pytest.approx(-(123 + 11.12 / 60))),
    ]


def test_bad_checksum_and_malformed_are_dead_letters_with_raw_bytes() -> None:
    bad = GGA.replace(b"545.4", b"545.5")
    malformed = encode_sentence("GPGGA", ["123519", "48x7.038", "N", "01131.000", "E", "1", "08"])
    wrong_hemisphere = encode_sentence("GPGLL", ["4916.45", "Q", "12311.12", "W", "1", "A"])
    data = (
        bad
        + b"$GPGGA,123519,4807.038,N\r\n"
        + b"$GPGGA,1*4\r\n"
        + b"hello\r\n"
        + malformed
        + wrong_hemisphere
        + "$GPGGA,é*00\r\n".encode()
        + RMC
    )
    out = NmeaDecoder("g").feed(data, TS)
    assert [(d.reason, d.raw) for d in out.dead_letters] == [
        (REASON_CHECKSUM, bad.rstrip()),
        (REASON_NO_CHECKSUM, b"$GPGGA,123519,4807.038,N"),
        (REASON_CHECKSUM, b"$GPGGA,1*4"),
        (REASON_NOT_SENTENCE, b"hello"),
        ("malformed GGA sentence", malformed.rstrip()),
        ("malformed GLL sentence", wrong_hemisphere.rstrip()),
        (REASON_ASCII, "$GPGGA,é*00".encode()),
    ]
    # The good sentence after them is read.
    assert ("course", 84.4) in pairs(out.samples)


def test_unknown_and_proprietary_sentences_are_skipped_and_counted() -> None:
    codec = NmeaDecoder("g")
    out = codec.feed(
        encode_sentence("GPTXT", ["01", "01", "02", "ANTSTATUS=OK"])
        + encode_sentence("PUBX", ["00", "1"])
        + b"\r\n\r\n",
        TS,
    )
    assert out.samples == []
    assert out.dead_letters == []
    assert codec.skipped == 2


def test_sentences_filter() -> None:
    codec = NmeaDecoder("g", sentences=("RMC",))
    out = codec.feed(GGA + RMC, TS)
    assert [k for k, _ in pairs(out.samples)] == ["utc", "lat", "lon", "speed", "course"]
    with pytest.raises(DriverError, match="unknown sentence"):
        NmeaDecoder("g", sentences=("XYZ",))


def test_units_override_defaults() -> None:
    out = NmeaDecoder("g", units={"altitude": "ft", "hdop": "1"}).feed(GGA, TS)
    units = {s.sensor: s.unit for s in out.samples}
    assert (units["altitude"], units["hdop"], units["lat"]) == ("ft", "1", "°")


def test_overlong_line_is_one_dead_letter_then_resync() -> None:
    codec = NmeaDecoder("g", max_sentence_bytes=100)
    dead: list[DeadLetter] = []
    for _ in range(1000):
        out = codec.feed(b"$" + b"A" * 999, TS)
        dead += out.dead_letters
        assert codec.buffered <= 100
    assert [(d.reason, len(d.raw)) for d in dead] == [(REASON_TOO_LONG, 100)]
    out = codec.feed(b"tail\r\n" + GGA, TS)
    assert out.dead_letters == []
    assert ("altitude", 545.4) in pairs(out.samples)


def test_reset_returns_the_unfinished_sentence() -> None:
    codec = NmeaDecoder("g")
    codec.feed(GGA[:20], TS)
    assert codec.reset(TS + 1) == DeadLetter("g", REASON_DISCONNECT, GGA[:20], TS + 1)
    assert codec.reset(TS) is None
    assert codec.buffered == 0


def test_encoder_refuses_what_would_break_framing() -> None:
    for bad in ("a*b", "a$", "a\r\n", "x!"):
        with pytest.raises(ValueError, match="NMEA field"):
            encode_sentence("GPGGA", [bad])


def test_simulated_bad_checksum_is_a_dead_letter() -> None:
    source = GpsSource(random.Random(3), start=1764086400.0)
    source.line()
    out = NmeaDecoder("g").feed(source.garbage(), TS)
    assert out.samples == []
    assert [d.reason for d in out.dead_letters] == [REASON_CHECKSUM]


# Round trip with the simulator's encoder --------------------------------------

fixes = st.builds(
    Fix,
    # RMC writes two-digit years, read as 1980 to 2079.
    utc=st.integers(315532800_00, 3471292799_99).map(lambda n: n / 100),
    lat=st.floats(-89.99, 89.99),
    lon=st.floats(-179.99, 179.99),
    altitude=st.floats(-400, 9000).map(lambda a: round(a, 1)),
    speed=st.floats(0, 300).map(lambda s: round(s, 3)),
    course=st.floats(0, 359.99).map(lambda c: round(c, 2)),
    quality=st.sampled_from([1, 2, 4, 5]),
    satellites=st.integers(0, 12),
    hdop=st.floats(0.5, 20).map(lambda h: round(h, 1)),
    talker=st.sampled_from(["GP", "GN", "GL", "GA", "BD"]),
)


@settings(max_examples=300, deadline=None)
@given(fix=fixes)
def test_encoded_fix_round_trips(fix: Fix) -> None:
    out = NmeaDecoder("g").feed(b"".join(fix.sentences()), TS)
    assert out.dead_letters == []
    got: dict[str, list[Value]] = {}
    for sample in out.samples:
        got.setdefault(sample.sensor, []).append(sample.value)
    # Five decimals of a minute: within 2e-7 degrees (2 cm).
    assert got["lat"] == [pytest.approx(fix.lat, abs=2e-7)] * 2
    assert got["lon"] == [pytest.approx(fix.lon, abs=2e-7)] * 2
    assert got["altitude"] == [fix.altitude]
    assert got["fix_quality"] == [fix.quality]
    assert got["satellites"] == [fix.satellites]
    assert got["utc"] == [pytest.approx(fix.utc, abs=0.006)]
    assert got["speed"] == [pytest.approx(fix.speed, abs=1e-3)] * 2
    assert got["course"] == [fix.course] * 2
    assert got[f"satellites_in_view.{fix.talker}"] == [10]


# Any split, any garbage --------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Simulated fixes mixed with bad checksums, noise, overlong and blank lines."""
    source = GpsSource(random.Random(draw(st.integers(0, 2**32))), start=1764086400.0)
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["fix", "fix", "bad", "noise", "long", "blank"]))
        if kind == "fix":
            parts.append(source.line())
        elif kind == "bad":
            parts.append(source.garbage())
        elif kind == "noise":
            noise = draw(st.binary(max_size=40)).replace(b"\n", b"").replace(b"\r", b"")
            parts.append(noise + b"\r\n")
        elif kind == "long":
            parts.append(b"$GPGGA," + b"9" * draw(st.integers(200, 400)) + b"\r\n")
        else:
            parts.append(b"\r\n")
    return b"".join(parts)


def decode_all(data: bytes, cuts: list[int]) -> tuple[list[tuple[str, Value]], list[DeadLetter]]:
    codec = NmeaDecoder("g", max_sentence_bytes=128)
    samples: list[Sample] = []
    dead: list[DeadLetter] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out = codec.feed(data[start:cut], TS)
        samples += out.samples
        dead += out.dead_letters
        start = max(start, cut)
        assert codec.buffered <= 128
    return pairs(samples), dead


@settings(max_examples=200, deadline=None)
@given(data=streams(), cut_points=st.lists(st.integers(0, 5000), max_size=20))
def test_any_split_gives_the_same_result(data: bytes, cut_points: list[int]) -> None:
    cuts = [c % (len(data) + 1) for c in cut_points]
    assert decode_all(data, cuts) == decode_all(data, [])


@settings(max_examples=30, deadline=None)
@given(data=streams())
def test_byte_by_byte_gives_the_same_result(data: bytes) -> None:
    assert decode_all(data, list(range(len(data)))) == decode_all(data, [])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), prefix=st.sampled_from([b"", b"$GPGGA,", b"$GNRMC,"]))
def test_random_bytes_never_raise_and_stay_bounded(data: bytes, prefix: bytes) -> None:
    codec = NmeaDecoder("g", max_sentence_bytes=64)
    out = codec.feed(prefix + data, TS)
    assert codec.buffered <= 64
    assert all(len(d.raw) <= 64 for d in out.dead_letters)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["GGA", "RMC", "GLL", "VTG", "GSA", "GSV", "ZDA"]),
    fields=st.lists(
        st.text(
            st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="$!*,"),
            max_size=12,
        ),
        max_size=20,
    ),
)
def test_any_fields_with_a_valid_checksum_never_raise(kind: str, fields: list[str]) -> None:
    """Hostile content behind a correct checksum: readings or one dead letter, never a crash."""
    out = NmeaDecoder("g", max_sentence_bytes=1024).feed(encode_sentence("GN" + kind, fields), TS)
    assert len(out.dead_letters) <= 1
    if out.dead_letters:
        assert out.samples == []
