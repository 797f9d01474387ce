"""Prometheus text exposition without a global registry.

Each part keeps plain counters in its status objects; ``/metrics`` renders them
at scrape time. Only latencies need a structure of their own: ``Histogram``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Cumulative-bucket histogram of seconds, cheap to observe on the hot path."""

    __slots__ = ("_counts", "bounds", "count", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count of observations <= bound), ending with +Inf."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


Samples = Iterable[tuple[Mapping[str, str], float]]


class Families(Protocol):
    """Where a scrape's families are declared (``Exposition`` writes them as text)."""

    def metric(self, name: str, kind: str, help_text: str, samples: Samples) -> None: ...

    def histogram(
        self, name: str, help_text: str, series: Iterable[tuple[Mapping[str, str], Histogram]]
    ) -> None: ...


class Exposition:
    """Builds one scrape: declare a family once, then add its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self._lines.append(f"{name}{_labels(labels or {})} {_number(value)}")

    def metric(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Samples,
    ) -> None:
        self.family(name, kind, help_text)
        for labels, value in samples:
            self.sample(name, value, labels)

    def histogram(
        self, name: str, help_text: str, series: Iterable[tuple[Mapping[str, str], Histogram]]
    ) -> None:
        self.family(name, "histogram", help_text)
        for labels, hist in series:
            for bound, count in hist.cumulative():
                self.sample(f"{name}_bucket", count, {**labels, "le": _number(bound)})
            self.sample(f"{name}_sum", hist.sum, labels)
            self.sample(f"{name}_count", hist.count, labels)

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"
