"""Summaries of measured samples."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..1)."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(seconds: list[float]) -> dict[str, float | int | None]:
    """p50, p90, p99, p99.9 and max in milliseconds, and the sample count."""
    if not seconds:
        return {
            "count": 0,
            "p50_ms": None,
            "p90_ms": None,
            "p99_ms": None,
            "p999_ms": None,
            "max_ms": None,
        }
    values = sorted(seconds)
    return {
        "count": len(values),
        "p50_ms": 1000 * percentile(values, 0.50),
        "p90_ms": 1000 * percentile(values, 0.90),
        "p99_ms": 1000 * percentile(values, 0.99),
        "p999_ms": 1000 * percentile(values, 0.999),
        "max_ms": 1000 * values[-1],
    }


@dataclass
class LatencySplit:
    """Line write → arrival, and its two parts around the reading's ``ts``.

    ``ts`` is when the target read the line (the gateway stamps each reading),
    so ``to_read`` is the serial side (pty, driver wake-up) and ``after_read``
    is everything after: commit, publish, broker or WebSocket, receiver.
    """

    total: list[float] = field(default_factory=list)
    to_read: list[float] = field(default_factory=list)
    after_read: list[float] = field(default_factory=list)

    def add(self, written: float, arrived: float, read: float) -> None:
        self.total.append(arrived - written)
        self.to_read.append(read - written)
        self.after_read.append(arrived - read)
