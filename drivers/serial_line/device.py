"""What each simulated device says, one line at a time, written with the gateway's own codec."""

from __future__ import annotations

import random
from typing import Protocol

from drivers.serial_line.codec import encode_kv

KINDS = ("thermo", "counter", "arduino")

# What an Arduino sketch printing with Serial.print typically sends, and the pattern
# that reads it (format = "regex").
ARDUINO_LINE = "Temperature: {t} C, Humidity: {h} %\r\n"
ARDUINO_PATTERN = r"Temperature: (?P<t>-?[0-9.]+) C, Humidity: (?P<h>[0-9.]+) %"


class LineSource(Protocol):
    def line(self) -> bytes:
        """The next line the device writes, newline included."""


class CounterSource:
    """``n=1``, ``n=2``, ...: a reader can check that it got every line exactly once."""

    def __init__(self, start: int = 1) -> None:
        self.next = start

    def line(self) -> bytes:
        n = self.next
        self.next = n + 1
        return encode_kv((("n", n),))


class _Drift:
    """A temperature and humidity that drift slowly, rounded as a sensor prints them."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._t = 21.5
        self._h = 40.0

    def step(self) -> tuple[float, float]:
        self._t = min(85.0, max(-40.0, self._t + self._rng.gauss(0.0, 0.05)))
        self._h = min(100.0, max(0.0, self._h + self._rng.gauss(0.0, 0.1)))
        return round(self._t, 2), round(self._h, 2)


class ThermoSource:
    """A temperature and humidity sensor whose values drift slowly, like ``t=21.53 h=40.2``."""

    def __init__(self, rng: random.Random) -> None:
        self._thermo = _Drift(rng)

    def line(self) -> bytes:
        t, h = self._thermo.step()
        return encode_kv((("t", t), ("h", h)))


class ArduinoSource:
    """The thermometer's drifting values as free text, for ``format = "regex"``."""

    def __init__(self, rng: random.Random) -> None:
        self._thermo = _Drift(rng)

    def line(self) -> bytes:
        t, h = self._thermo.step()
        return ARDUINO_LINE.format(t=t, h=h).encode()


def make_source(kind: str, rng: random.Random, start: int = 1) -> LineSource:
    if kind == "counter":
        return CounterSource(start)
    if kind == "thermo":
        return ThermoSource(rng)
    if kind == "arduino":
        return ArduinoSource(rng)
    raise ValueError(f"unknown device kind {kind!r} (known: {', '.join(KINDS)})")


def garbage_line(rng: random.Random) -> bytes:
    """A line of binary noise that can never parse: it starts with a NUL and a byte that
    is invalid UTF-8, holds no line end until its own, so the lines around it stay intact."""
    noise = bytes(rng.randrange(256) for _ in range(14))
    return b"\x00\xff" + noise.replace(b"\n", b"\x80").replace(b"\r", b"\x81") + b"\n"
