"""What each simulated device says, one line at a time, written with the gateway's own codec."""

from __future__ import annotations

import random
from typing import Protocol

from drivers.serial_line.codec import encode_kv

KINDS = ("thermo", "counter")


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


class ThermoSource:
    """A temperature and humidity sensor whose values drift slowly, like ``t=21.53 h=40.2``."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._t = 21.5
        self._h = 40.0

    def line(self) -> bytes:
        self._t = min(85.0, max(-40.0, self._t + self._rng.gauss(0.0, 0.05)))
        self._h = min(100.0, max(0.0, self._h + self._rng.gauss(0.0, 0.1)))
        return encode_kv((("t", round(self._t, 2)), ("h", round(self._h, 2))))


def make_source(kind: str, rng: random.Random, start: int = 1) -> LineSource:
    if kind == "counter":
        return CounterSource(start)
    if kind == "thermo":
        return ThermoSource(rng)
    raise ValueError(f"unknown device kind {kind!r} (known: {', '.join(KINDS)})")


def garbage_line(rng: random.Random) -> bytes:
    """A line of binary noise that can never parse: it starts with a NUL and a byte that
    is invalid UTF-8, holds no line end until its own, so the lines around it stay intact."""
    noise = bytes(rng.randrange(256) for _ in range(14))
    return b"\x00\xff" + noise.replace(b"\n", b"\x80").replace(b"\r", b"\x81") + b"\n"
