"""``format = "regex"``: free-text lines read through named groups, in bounded time."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial_line.codec import LineDecoder
from drivers.serial_line.device import ARDUINO_LINE, ARDUINO_PATTERN
from drivers.serial_line.pattern import (
    REASON_NO_MATCH,
    REASON_TIMEOUT,
    compile_pattern,
)
from drivers.serial_line.settings import SerialLineSettings
from drivers.serial_line.transport import SerialLineDriver
from gateway.config import parse_config
from gateway.errors import ConfigError, DriverError
from gateway.reading import Sample, Value
from gateway.retry import Backoff
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.drivers import RecordingSink, running, wait_open

TS = 1764086400.5


class Samples(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.samples: list[Sample] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)


def arduino(**options: Any) -> LineDecoder:
    return LineDecoder("a1", "regex", pattern=ARDUINO_PATTERN, **options)


def values(decoder: LineDecoder, data: bytes) -> list[tuple[str, Value]]:
    out = decoder.feed(data, TS)
    assert out.dead_letters == []
    return [(s.sensor, s.value) for s in out.samples]


def test_named_groups_become_readings_with_their_units() -> None:
    decoder = arduino(units={"t": "°C"})
    out = decoder.feed(b"Temperature: 21.5 C, Humidity: 40 %\r\n", TS)
    assert [(s.sensor, s.value, s.unit, s.ts) for s in out.samples] == [
        ("t", 21.5, "°C", TS),
        ("h", 40, None, TS),
    ]


def test_a_line_the_pattern_does_not_match_is_a_dead_letter() -> None:
    out = arduino().feed(b"booting...\nTemperature: -3.25 C, Humidity: 99.5 %\n", TS)
    assert [(d.reason, d.raw) for d in out.dead_letters] == [(REASON_NO_MATCH, b"booting...")]
    assert [(s.sensor, s.value) for s in out.samples] == [("t", -3.25), ("h", 99.5)]


def test_a_group_that_took_no_part_gives_no_reading() -> None:
    decoder = LineDecoder("a1", "regex", pattern=r"t=(?P<t>\S+)(?: h=(?P<h>\S+))?")
    assert values(decoder, b"t=1 h=2\nt=3\n") == [("t", 1), ("h", 2), ("t", 3)]


def test_a_hostile_line_is_cut_off_and_the_next_line_is_read() -> None:
    # No nesting, so check-config accepts it, but on a long run of digits without the
    # final non-digit a backtracking matcher tries every split: O(n^4).
    decoder = LineDecoder("a1", "regex", pattern=r"(?P<n>\d+)\d+\d+\d+\D", max_line_bytes=8192)
    out = decoder.feed(b"1" * 6000 + b"\n12345x\n", TS)
    assert [d.reason for d in out.dead_letters] == [REASON_TIMEOUT]
    assert [(s.sensor, s.value) for s in out.samples] == [("n", 12)]


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?P<a>(a+)+)b",
        r"(?P<a>(?:a*)*)",
        r"(?P<a>(\d+,?)+)$",
        r"(?P<a>(?:\w+\s?)*)=",
        r"(?P<a>(?:a|ab)*)c",
        r"(?P<a>(?:x(?:ab|a))+)",
        r"(?P<a>(?:(?:a{2,})b)*)",
    ],
)
def test_nested_repetition_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="exponential time"):
        compile_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        ARDUINO_PATTERN,
        r"(?P<t>-?\d+(?:\.\d+)?)",  # an optional part inside a repeat is not a repeat
        r"(?P<a>(?>a+)+)b",  # atomic: never backtracks into its a+
        r"(?P<a>(?:a++,)*)",  # possessive
        r"^(?P<id>\w+):(?P<v>[^,]*)(?:,(?P<w>[^,]*))?$",
    ],
)
def test_patterns_without_nested_repetition_are_accepted(pattern: str) -> None:
    assert compile_pattern(pattern).groupindex


def test_codec_refuses_a_bad_pattern() -> None:
    with pytest.raises(DriverError, match="needs at least one named group"):
        LineDecoder("a1", "regex", pattern=r"(\d+)")


# Hypothesis: the round trip with the simulated device, any split, any input.

temperatures = st.floats(-40, 85, allow_nan=False).map(lambda t: round(t, 2))
humidities = st.integers(0, 100) | st.floats(0, 100).map(lambda h: round(h, 1))


@given(
    readings=st.lists(st.tuples(temperatures, humidities), min_size=1, max_size=20),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
)
def test_simulated_lines_read_back_in_any_split(
    readings: list[tuple[float, float]], cuts: list[int]
) -> None:
    data = "".join(ARDUINO_LINE.format(t=t, h=h) for t, h in readings).encode()
    decoder = arduino()
    got: list[tuple[str, Value]] = []
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(bounds):
        got += values(decoder, data[start:end])
    assert got == [pair for t, h in readings for pair in (("t", t), ("h", h))]


@given(lines=st.lists(st.text(max_size=200), max_size=10))
def test_any_text_gives_readings_or_one_dead_letter_per_line(lines: list[str]) -> None:
    decoder = arduino(max_line_bytes=256)
    data = "".join(line.replace("\r", " ").replace("\n", " ") + "\n" for line in lines).encode()
    out = decoder.feed(data, TS)
    good = sum(1 for s in out.samples if s.sensor == "t")
    nonblank = sum(1 for line in lines if line.replace("\r", " ").replace("\n", " ").strip())
    assert good + len(out.dead_letters) == nonblank
    assert decoder.buffered == 0


hostile_runs = st.tuples(st.sampled_from("a1 ,.=x"), st.integers(1, 3000))


@given(
    pattern=st.sampled_from(
        [r"(?P<a>a*a*a*b)", r"(?P<n>\d+)\d+\d+\D", r"(?P<s>\s*,?\s*\S+\s*)=", ARDUINO_PATTERN]
    ),
    runs=st.lists(hostile_runs, min_size=1, max_size=4),
)
def test_hostile_lines_never_raise_and_never_stall(
    pattern: str, runs: list[tuple[str, int]]
) -> None:
    limit = 8192
    decoder = LineDecoder("a1", "regex", pattern=pattern, max_line_bytes=limit)
    line = "".join(char * count for char, count in runs).encode()
    out = decoder.feed(line + b"\n", TS)
    # A line of only spaces is skipped unless it is too long; any other gives readings
    # or one dead letter.
    expected = 1 if line.strip() or len(line) > limit else 0
    assert len(out.dead_letters) + (1 if out.samples else 0) == expected


# The configuration --------------------------------------------------------------


def regex_device(**keys: object) -> dict[str, object]:
    device = {"id": "a1", "driver": "serial_line", "port": "/dev/x", **keys}
    return {"devices": [device]}


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, None)
    return [str(p) for p in info.value.problems]


def test_a_regex_device_is_configured_with_its_pattern() -> None:
    (device,) = parse_config(regex_device(format="regex", pattern=ARDUINO_PATTERN), None).devices
    assert isinstance(device, SerialLineSettings)
    assert (device.format, device.pattern) == ("regex", ARDUINO_PATTERN)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"format": "regex"}, 'devices[0].pattern: required when format = "regex"'),
        ({"pattern": ARDUINO_PATTERN}, 'devices[0].pattern: only used with format = "regex"'),
        (
            {"format": "regex", "pattern": "(?P<t>"},
            "devices[0].pattern: is not a valid regular expression: missing ), unterminated "
            "subpattern at position 0",
        ),
        (
            {"format": "regex", "pattern": r"t=(\d+)"},
            "devices[0].pattern: needs at least one named group, like (?P<t>[-0-9.]+): each "
            "names a sensor",
        ),
        (
            {"format": "regex", "pattern": r"(?P<t>(\d+ ?)+)$"},
            "devices[0].pattern: repeats a part that holds a quantifier or alternatives ((a+)+ "
            "and the like): a hostile line could make matching take exponential time; make "
            "the inner part atomic (?>…) or possessive (++, *+) or write it without nesting",
        ),
        ({"format": "regex", "pattern": ""}, "devices[0].pattern: must not be empty"),
    ],
)
def test_check_config_names_a_bad_pattern(keys: dict[str, object], expected: str) -> None:
    assert problems(regex_device(**keys)) == [expected]


# End to end: the simulated Arduino on a pseudo-terminal, read by the driver. ------


async def test_the_simulated_arduino_is_read_with_its_pattern(tmp_path: Path) -> None:
    link = tmp_path / "arduino"
    sink = Samples()
    settings = SerialLineSettings(
        id="arduino-1", port=str(link), format="regex", pattern=ARDUINO_PATTERN
    )
    async with PtyDevice("arduino", link, rate=200, count=50, seed=7, paused=True) as dev:
        driver = SerialLineDriver(settings, sink, backoff=Backoff(0.02, 0.2, missing_poll=0.02))
        async with running(driver):
            await wait_open(driver)
            dev.resume()
            await wait_until(lambda: driver.status.readings >= 100, message="50 lines")
    assert [s.sensor for s in sink.samples[:4]] == ["t", "h", "t", "h"]
    assert all(isinstance(s.value, float | int) for s in sink.samples)
    assert sink.dead == []
