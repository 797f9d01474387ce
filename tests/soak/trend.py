"""Whether a resource (RSS, open fds) keeps growing: a robust slope against a stated bound.

The slope is the Theil-Sen estimator: the median of the slopes between every pair of
samples. A burst (a disk-full buffer, a reconnect's sockets) moves a few pairs, not the
median, so a bump that comes and goes does not read as a trend, and a steady climb does
whatever its noise. The fitted rise over the window (slope times window length) must stay
within ``max(floor, per_hour * window hours)``: the floor absorbs what a short window
cannot tell from noise (allocator warm-up, a page cache filling), the per-hour part is
the leak rate a long run is allowed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Enough pairs for a stable median; more only costs time (n² pairs).
MAX_POINTS = 300


@dataclass(frozen=True, slots=True)
class TrendBound:
    metric: str
    unit: str
    floor: float  # rise always allowed over the window
    per_hour: float  # rise allowed per hour of window on top of the floor


@dataclass(frozen=True, slots=True)
class Trend:
    bound: TrendBound
    samples: int
    start: float  # window, seconds since the campaign's start
    end: float
    slope: float  # unit per second
    intercept: float  # fitted value at t = 0
    allowed_rise: float

    @property
    def window(self) -> float:
        return self.end - self.start

    @property
    def rise(self) -> float:
        return self.slope * self.window

    @property
    def per_hour(self) -> float:
        return self.slope * 3600.0

    @property
    def ok(self) -> bool:
        return self.rise <= self.allowed_rise

    def describe(self) -> str:
        unit = self.bound.unit
        return (
            f"{self.bound.metric}: fitted rise {self.rise:+.2f} {unit} over "
            f"{self.window:.0f} s ({self.per_hour:+.2f} {unit}/h, {self.samples} samples); "
            f"allowed {self.allowed_rise:.2f} {unit}"
        )


def theil_sen(ts: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Slope and intercept of the Theil-Sen line through (ts, ys)."""
    if len(ts) != len(ys) or len(ts) < 2:
        raise ValueError("need at least two points, as many times as values")
    step = max(1, len(ts) // MAX_POINTS)
    xs, vs = ts[::step], ys[::step]
    slopes = [
        (vs[j] - vs[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    slope = statistics.median(slopes)
    intercept = statistics.median(v - slope * x for x, v in zip(xs, vs, strict=True))
    return slope, intercept


def fit(bound: TrendBound, ts: Sequence[float], ys: Sequence[float]) -> Trend:
    slope, intercept = theil_sen(ts, ys)
    window = ts[-1] - ts[0]
    return Trend(
        bound=bound,
        samples=len(ts),
        start=ts[0],
        end=ts[-1],
        slope=slope,
        intercept=intercept,
        allowed_rise=max(bound.floor, bound.per_hour * window / 3600.0),
    )
