"""The kinds of device `edge-gateway sim KIND` simulates, each written by its driver's codec."""

from __future__ import annotations

import random

from drivers.framed.device import FramedSource
from drivers.nmea.device import GpsSource
from drivers.serial_line.device import KINDS as LINE_KINDS
from drivers.serial_line.device import LineSource, garbage_line
from drivers.serial_line.device import make_source as make_line_source

KINDS = (*LINE_KINDS, "gps", "framed")


def make_source(kind: str, rng: random.Random, start: int = 1) -> LineSource:
    if kind == "gps":
        return GpsSource(rng)
    if kind == "framed":
        return FramedSource(rng, start)
    if kind in LINE_KINDS:
        return make_line_source(kind, rng, start)
    raise ValueError(f"unknown device kind {kind!r} (known: {', '.join(KINDS)})")


def bad_line(source: LineSource, rng: random.Random) -> bytes:
    """What ``--garbage-every`` writes: the device's own kind of bad input if it has one
    (a GPS: a sentence with a wrong checksum; framed: noise, then a frame with a bad
    CRC), else a line of binary noise."""
    garbage = getattr(source, "garbage", None)
    if callable(garbage):
        data: bytes = garbage()
        return data
    return garbage_line(rng)
