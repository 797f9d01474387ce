"""How long and how big each benchmark runs: the full run and the quick smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    warmup: float  # seconds of load before a measuring window opens
    window: float  # seconds of a throughput window
    paced_window: float  # seconds of a window at a fixed rate (latency, CPU, fan-out)
    backlog_sizes: tuple[int, ...]
    fanout_clients: tuple[int, ...]
    # Also run the smallest fan-out case with durability = "normal" (no fsync per commit).
    fanout_without_fsync: bool = True
    # Gateway runs per fan-out case; the figures are their medians (see fanout.py).
    fanout_repeats: int = 3
    devices: int = 1  # counter devices feeding the gateway at max rate


FULL = Plan(
    name="full",
    warmup=3.0,
    window=10.0,
    paced_window=10.0,
    backlog_sizes=(1_000, 100_000, 1_000_000),
    fanout_clients=(10, 100, 1000),
)

QUICK = Plan(
    name="quick",
    warmup=1.0,
    window=2.0,
    paced_window=2.0,
    backlog_sizes=(1_000, 20_000),
    fanout_clients=(10,),
    fanout_without_fsync=False,
    fanout_repeats=1,
)
