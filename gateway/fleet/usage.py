"""Memory and CPU of processes, as psutil reads them from /proc.

PSS (proportional set size) splits each shared page between the processes that
map it: with many gateways sharing the interpreter and its libraries, PSS adds up
to what the fleet really takes, where RSS counts the shared pages once per process.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # time.monotonic()
    cpu_seconds: float  # user + system
    rss_bytes: int
    pss_bytes: int | None  # None where the kernel does not give it


def sample(pid: int) -> Sample | None:
    """One process's figures; None if it is gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            cpu = proc.cpu_times()
            try:
                full = proc.memory_full_info()
                rss, pss = full.rss, getattr(full, "pss", None)
            except psutil.AccessDenied:
                rss, pss = proc.memory_info().rss, None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    return Sample(time.monotonic(), cpu.user + cpu.system, rss, pss)


def cpu_percent(first: Sample, last: Sample) -> float:
    """CPU between two samples of one process, in % of one core."""
    if last.t <= first.t:
        return 0.0
    return 100.0 * (last.cpu_seconds - first.cpu_seconds) / (last.t - first.t)


@dataclass(frozen=True, slots=True)
class Spread:
    """How a figure spreads over the fleet."""

    median: float
    mean: float
    max: float
    total: float

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        if not values:
            return None
        return cls(statistics.median(values), statistics.fmean(values), max(values), sum(values))
