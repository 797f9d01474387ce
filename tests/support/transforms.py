"""Reference computations of the transforms, plain enough to be obviously right."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from gateway.reading import Value


def deadband_reference(
    points: Sequence[tuple[float, Value]], band: Callable[[float], float]
) -> list[tuple[float, Value]]:
    kept: list[tuple[float, Value]] = []
    for ts, value in points:
        if not kept or abs(value - kept[-1][1]) > band(kept[-1][1]):  # type: ignore[operator, arg-type]
            kept.append((ts, value))
    return kept


def interval_reference(
    points: Sequence[tuple[float, Value]], interval: float
) -> list[tuple[float, Value]]:
    kept: list[tuple[float, Value]] = []
    for ts, value in points:
        if not kept or ts - kept[-1][0] >= interval:
            kept.append((ts, value))
    return kept


def aggregate_reference(
    points: Sequence[tuple[float, Value]], window: float, aggregate: str
) -> list[tuple[float, Value]]:
    groups: dict[int, list[Value]] = {}
    for ts, value in points:
        groups.setdefault(math.floor(ts / window), []).append(value)
    compute: dict[str, Callable[[list[Any]], Value]] = {
        "min": min,
        "max": max,
        "mean": lambda vs: sum(vs) / len(vs),
        "last": lambda vs: vs[-1],
        "count": len,
    }
    return [((index + 1) * window, compute[aggregate](vs)) for index, vs in groups.items()]
