"""The keys of a ``serial_line`` device: its port, and how its lines become readings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from drivers.serial_line.pattern import MATCH_TIMEOUT, compile_pattern
from drivers.serial_port import SerialPortSettings
from gateway.fields import (
    Given,
    Invalid,
    bounded_duration,
    choice,
    key,
    sensor_names,
    size,
    text,
)
from gateway.settings import driver_tag

LineFormat = Literal["kv", "csv", "json", "regex"]


def line_pattern(value: object) -> str:
    pattern = text(value)
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return pattern


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialLineSettings(SerialPortSettings):
    driver: Literal["serial_line"] = driver_tag("serial_line")
    format: LineFormat = field(
        default="kv",
        metadata=key(
            choice(get_args(LineFormat)),
            "string",
            'How a line becomes readings. `"kv"`: `t=21.5 h=40.2` (pairs split by spaces or '
            'commas), one reading per pair. `"csv"`: comma-separated values named by '
            '`columns`. `"json"`: one JSON object per line, one reading per member (nested '
            'objects give dotted sensor names: `{"gps": {"lat": 1}}` is `gps.lat`). `"regex"`: '
            "the line is searched with `pattern`, one reading per named group. A line that "
            "does not parse is kept as a dead letter.",
        ),
    )
    # For format = "csv": the sensor name of each column, in order.
    columns: tuple[str, ...] = field(
        default=(),
        metadata=key(
            sensor_names,
            "array of strings",
            'For `format = "csv"` (and required by it): the sensor name of each column, in order.',
        ),
    )
    # For format = "regex": named groups are the sensors.
    pattern: str = field(
        default="",
        metadata=key(
            line_pattern,
            "string",
            'For `format = "regex"` (and required by it): a regular expression searched in '
            "each line; each named group that matched is a reading, named by the group: "
            "`'Temperature: (?P<t>-?[0-9.]+) C, Humidity: (?P<h>[0-9.]+) %'` (a TOML literal "
            "string in single quotes keeps the backslashes as written). A line it does not "
            "match is a dead letter. Checked by `check-config`: it must compile, have a named "
            "group, and not repeat a part that holds a quantifier or alternatives "
            "(`(a+)+`, `(a|ab)*`), which can take exponential time on a hostile line; "
            "atomic groups `(?>…)` and possessive quantifiers `++` are fine. Each match "
            f"is also cut off after {MATCH_TIMEOUT * 1000:g} ms (the line becomes a dead "
            "letter).",
        ),
    )
    # Longest accepted line; a longer one becomes a dead letter.
    max_line_bytes: int = field(
        default=4096,
        metadata=key(
            size(16),
            "size",
            "Longest accepted line (at least 16 bytes); a longer one becomes a dead letter "
            "and reading resumes at the next line.",
        ),
    )
    # After a read that empties the port, the next read waits this long, so a device
    # sending hundreds of lines a second is read in chunks (one wake of the gateway per
    # chunk, not per line) at the cost of at most this much latency; its readings share
    # the chunk's read time. A line after a quiet spell is read at once. 0 reads every
    # line as it arrives.
    read_interval: float = field(
        default=0.018,
        metadata=key(
            bounded_duration(0.0, 1.0),
            "duration",
            "After a read that empties the port, the next read waits this long, so a device "
            "sending hundreds of lines a second is read a chunk at a time: at 1,000 lines/s "
            "about 55 reads, commits and MQTT messages a second instead of 1,000, 190 and "
            "100, which brings the gateway's CPU from 17% to 7% of a core (see "
            "docs/benchmarks.md). A line after a quiet spell is read at once, and a port that "
            "stays full is read back to back. Costs at most this much latency, and the "
            "readings of a chunk share its read time as `ts`. Not applied while a client "
            "watches the live stream (`/api/v1/stream`): then every line goes on as it "
            'arrives. `0`: read every line as it arrives, always. Up to `"1s"`.',
        ),
    )

    def cross_check(self, keys: Given) -> Iterator[tuple[str, str]]:
        for name, fmt, given in (
            ("columns", "csv", self.columns),
            ("pattern", "regex", self.pattern),
        ):
            if not keys.ok("format", name):
                continue
            if self.format == fmt and not given:
                yield name, f'required when format = "{fmt}"'
            if self.format != fmt and given:
                yield name, f'only used with format = "{fmt}"'
