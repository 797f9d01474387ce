"""The sans-io codec of line-oriented serial devices: bytes in, samples and dead letters out.

A device writes one record per line (``kv``, ``csv``, ``json``, or free text read with
a ``regex`` pattern whose named groups are the sensors). ``LineDecoder`` is
fed whatever chunk the port returned, in any split, and keeps only the unfinished tail
of the last line, never more than ``max_line_bytes``: a longer line becomes one dead
letter and the decoder discards up to the next line end. Every line either becomes
samples or one dead letter with its raw bytes; a line is never half-accepted.

The encoder side (``encode_kv``) is what simulated devices write, so the simulator and
the gateway agree on the format by construction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

import regex

from drivers.serial_line.pattern import (
    MATCH_TIMEOUT,
    REASON_NO_MATCH,
    REASON_TIMEOUT,
    compile_pattern,
)
from drivers.serial_line.settings import LineFormat, SerialLineSettings
from gateway.errors import DriverError
from gateway.reading import DeadLetter, Sample, Value

REASON_TOO_LONG = "line too long"
REASON_NUL = "NUL byte in line"
REASON_UTF8 = "invalid UTF-8"
REASON_DISCONNECT = "incomplete line at disconnect"

_NL = b"\n"
_CR = b"\r"
# How a number may start, including nan and inf in any case.
_NUMBER_START = frozenset("+-.0123456789nNiI")


class _BadLine(ValueError):
    """A line that cannot become samples; its message is the dead letter's reason."""


@dataclass(slots=True)
class Decoded:
    """What one ``feed`` produced, in input order within each list."""

    samples: list[Sample] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def parse_value(text: str) -> Value:
    """A number where ``text`` is one (int before float), else the text itself.

    Python's int/float also accept digit-group underscores; a sensor printing
    ``1_000`` is not sending a number we should guess at, so it stays a string.
    The first-character and dot checks only spare the common cases an exception.
    """
    if not text or text[0] not in _NUMBER_START or "_" in text:
        return text
    if "." not in text:
        try:
            return int(text)
        except ValueError:
            # More digits than int() takes: kept as the digits, not read as inf.
            if text.lstrip("+-").isdigit():
                return text
    try:
        return float(text)
    except ValueError:
        return text


def encode_kv(pairs: Iterable[tuple[str, Value]]) -> bytes:
    """One ``kv`` line, newline included, that ``LineDecoder`` reads back to these pairs.

    Floats are written with ``repr`` (the shortest text that parses back to the same
    float); keys and string values must not hold the separators.
    """
    parts = []
    for key, value in pairs:
        if isinstance(value, bool):
            raise TypeError(f"kv cannot carry a bool ({key}={value}); send 0/1 or a word")
        text = repr(value) if isinstance(value, float) else str(value)
        if not key or not text or _has_separator(key) or "=" in key or _has_separator(text):
            raise ValueError(f"kv cannot carry {key!r}={text!r}")
        if isinstance(value, str) and parse_value(value) != value:
            raise ValueError(f"kv string {value!r} would read back as a number")
        parts.append(f"{key}={text}")
    if not parts:
        raise ValueError("a kv line needs at least one pair")
    return (" ".join(parts) + "\n").encode()


def _has_separator(text: str) -> bool:
    return "," in text or len(text.split()) != 1 or "\x00" in text


class LineDecoder:
    """Turns a byte stream of lines into samples and dead letters, with a bounded buffer."""

    def __init__(
        self,
        device: str,
        fmt: LineFormat = "kv",
        *,
        columns: Sequence[str] = (),
        pattern: str = "",
        units: Mapping[str, str] | None = None,
        max_line_bytes: int = 4096,
    ) -> None:
        if max_line_bytes < 1:
            raise DriverError(device, "max_line_bytes must be at least 1")
        if fmt == "csv" and not columns:
            raise DriverError(device, 'format "csv" needs columns')
        if fmt not in ("kv", "csv", "json", "regex"):
            raise DriverError(device, f"unknown line format {fmt!r}")
        self.pattern: regex.Pattern[str] | None = None
        if fmt == "regex":
            try:
                self.pattern = compile_pattern(pattern)
            except ValueError as exc:
                raise DriverError(device, f"pattern {exc}") from None
        self.device = device
        self.format: LineFormat = fmt
        self.columns = tuple(columns)
        self.units = dict(units or {})
        self.max_line_bytes = max_line_bytes
        self._tail = b""
        # True after an overlong line until its end is seen.
        self._discarding = False

    @classmethod
    def from_settings(cls, settings: SerialLineSettings) -> Self:
        return cls(
            settings.id,
            settings.format,
            columns=settings.columns,
            pattern=settings.pattern,
            units=settings.units,
            max_line_bytes=settings.max_line_bytes,
        )

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held between feeds (never above max_line_bytes)."""
        return len(self._tail)

    def feed(self, data: bytes, ts: float) -> Decoded:
        """Decode a chunk read at time ``ts``; lines it completes get that timestamp."""
        out = Decoded()
        if not data:
            return out
        # \r, \n and \r\n all end a line; \r\n then yields an empty line, which is skipped.
        data = data.replace(_CR, _NL)
        if self._discarding:
            end = data.find(_NL)
            if end < 0:
                return out
            self._discarding = False
            data = data[end + 1 :]
        lines = (self._tail + data).split(_NL)
        tail = lines.pop()
        limit = self.max_line_bytes
        for line in lines:
            if line:
                if len(line) > limit:
                    out.dead_letters.append(self._dead(REASON_TOO_LONG, line[:limit], ts))
                else:
                    self._decode_line(line, ts, out)
        if len(tail) > limit:
            out.dead_letters.append(self._dead(REASON_TOO_LONG, tail[:limit], ts))
            tail = b""
            self._discarding = True
        self._tail = tail
        return out

    def reset(self, ts: float) -> DeadLetter | None:
        """Forget the unfinished line (the port closed); it is returned as a dead letter."""
        tail, self._tail = self._tail, b""
        self._discarding = False
        return self._dead(REASON_DISCONNECT, tail, ts) if tail else None

    def _dead(self, reason: str, raw: bytes, ts: float) -> DeadLetter:
        return DeadLetter(device=self.device, reason=reason, raw=raw, ts=ts)

    def _decode_line(self, line: bytes, ts: float, out: Decoded) -> None:
        if b"\x00" in line:
            out.dead_letters.append(self._dead(REASON_NUL, line, ts))
            return
        try:
            text = line.decode()
        except UnicodeDecodeError:
            out.dead_letters.append(self._dead(REASON_UTF8, line, ts))
            return
        if text.isspace():
            return
        try:
            if self.format == "kv":
                out.samples.extend(self._kv(text, ts))
            elif self.format == "csv":
                out.samples.extend(self._csv(text, ts))
            elif self.pattern is not None:
                out.samples.extend(self._regex(self.pattern, text, ts))
            else:
                out.samples.extend(self._json(text, ts))
        except _BadLine as exc:
            out.dead_letters.append(self._dead(str(exc), line, ts))

    def _sample(self, sensor: str, value: Value, ts: float) -> Sample:
        return Sample(self.device, sensor, value, ts, self.units.get(sensor))

    def _kv(self, text: str, ts: float) -> list[Sample]:
        pairs = text.replace(",", " ").split()
        if not pairs:
            return []
        device = self.device
        units = self.units
        samples = []
        for pair in pairs:
            key, sep, raw_value = pair.partition("=")
            if not (key and sep and raw_value):
                raise _BadLine(f"bad pair: {pair[:40]!r} (expected key=value)")
            samples.append(Sample(device, key, parse_value(raw_value), ts, units.get(key)))
        return samples

    def _csv(self, text: str, ts: float) -> list[Sample]:
        fields = [f.strip() for f in text.split(",")]
        if len(fields) != len(self.columns):
            raise _BadLine(f"wrong column count: expected {len(self.columns)}, got {len(fields)}")
        if tuple(fields) == self.columns:
            return []  # the device repeated its header line
        # An empty field is a sensor with no value this time, not a reading.
        return [
            self._sample(name, parse_value(f), ts)
            for name, f in zip(self.columns, fields, strict=True)
            if f
        ]

    def _regex(self, pattern: regex.Pattern[str], text: str, ts: float) -> list[Sample]:
        try:
            match = pattern.search(text, timeout=MATCH_TIMEOUT)
        except TimeoutError:
            raise _BadLine(REASON_TIMEOUT) from None
        if match is None:
            raise _BadLine(REASON_NO_MATCH)
        # A named group that took no part in the match is a sensor with no value this time.
        return [
            self._sample(name, parse_value(value), ts)
            for name, value in match.groupdict().items()
            if value is not None
        ]

    def _json(self, text: str, ts: float) -> list[Sample]:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _BadLine(f"invalid JSON: {str(exc)[:80]}") from None
        if not isinstance(obj, dict):
            raise _BadLine("not a JSON object")
        samples: list[Sample] = []
        self._flatten(obj, "", ts, samples)
        return samples

    def _flatten(self, obj: dict[str, object], prefix: str, ts: float, out: list[Sample]) -> None:
        # Nested objects become dotted sensor names ({"gps": {"lat": 1}} -> gps.lat);
        # null means "no value this time" and is skipped; arrays have no sensor name
        # per element, so a line holding one is refused whole.
        for key, value in obj.items():
            if not key:
                raise _BadLine("empty sensor name")
            name = prefix + key
            if isinstance(value, dict):
                self._flatten(value, name + ".", ts, out)
            elif isinstance(value, list):
                raise _BadLine(f"array value for {name[:40]!r}")
            elif isinstance(value, bool | int | float | str):
                out.append(self._sample(name, value, ts))
