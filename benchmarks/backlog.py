"""Backlog drain: how fast a log of N readings empties once the broker is back.

For each N the log is filled through the Store API in a separate process (what
an outage leaves behind: N committed readings owed to the uplink), then the
broker and the subscriber start, then the gateway. Drain rate = N / (last
arrival - first arrival) at the subscriber; the gateway's RSS is sampled every
50 ms from its start until the subscriber has every reading.

The naive baseline has no figure here: with no store, what it read during the
outage is gone (or held in paho's unbounded memory queue until it dies).
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from benchmarks.harness import (
    BenchError,
    Child,
    Gateway,
    GatewayConfig,
    PtyLink,
    RssSampler,
    cpu_percent,
    memory_breakdown,
    private_broker,
    python_module,
    scratch_dir,
    snapshot,
)
from benchmarks.pipeline import progress, subscriber, wait_received
from benchmarks.plan import Plan
from benchmarks.report import BenchResult, Figure

MB = 1_000_000


def measure_drain(count: int) -> dict[str, Any]:
    work = scratch_dir(f"backlog-{count}")
    config_dir = work / "gw"
    config_dir.mkdir()
    link = PtyLink(work / "tty-idle")
    try:
        t0 = time.monotonic()
        filled = Child(
            "prefill",
            python_module(
                "benchmarks.prefill", "--data-dir", str(config_dir / "data"), "--count", str(count)
            ),
            work,
        )
        fill = filled.wait_event("done", 60 + count / 20_000)
        filled.stop()
        if fill["last_seq"] != count or fill["dropped"]:
            raise BenchError(f"prefill stored {fill['last_seq']} of {count} readings")
        fill_seconds = time.monotonic() - t0
        with private_broker(work) as broker, subscriber(work, broker, "gateway") as sub:
            # One idle device, as a real gateway has, so its reader runs too.
            config = GatewayConfig(config_dir, [("idle-1", link.path)], broker.url)
            with Gateway(config) as gw, RssSampler(gw.pid) as rss:
                s0 = snapshot(gw.pid)
                complete = wait_received(sub, count, 60 + count / 5_000)
                s1 = snapshot(gw.pid)
                memory = memory_breakdown(gw.pid)
                p = progress(sub)
                # RSS once the backlog is gone, to see whether memory is given back.
                time.sleep(1.0)
                rss_after = snapshot(gw.pid).rss_bytes
        first, last = p["first_arrival"], p["last_arrival"]
        drain_s = (last - first) if first is not None and last is not None else None
        return {
            "count": count,
            "received": p["distinct"],
            "complete": complete,
            "duplicates": p["readings"] - p["distinct"],
            "fill_seconds": fill_seconds,
            "db_bytes": fill["bytes"],
            "drain_seconds": drain_s,
            "drain_per_s": count / drain_s if complete and drain_s else None,
            "start_to_all_seconds": (last - gw.started) if last is not None else None,
            "start_to_all_per_s": count / (last - gw.started) if complete and last else None,
            "messages": p["messages"],
            "cpu_percent": cpu_percent(s0, s1),
            "max_rss_bytes": rss.max_bytes,
            "rss_after_drain_bytes": rss_after,
            "rss_samples": len(rss.samples),
            "memory_at_end_of_drain": memory,
        }
    finally:
        link.close()
        shutil.rmtree(work, ignore_errors=True)


def run_backlog(plan: Plan) -> BenchResult:
    runs = [measure_drain(n) for n in plan.backlog_sizes]
    bench = "backlog"
    figures = []
    for r in runs:
        if r["count"] >= 10_000:
            figures.append(
                Figure(
                    bench,
                    f"drain {r['count']:,} readings",
                    "readings/s",
                    r["drain_per_s"],
                    50_000,
                    "min",
                    note="first to last arrival",
                )
            )
    for r in runs:
        figures.append(
            Figure(
                bench,
                f"gateway max RSS, {r['count']:,} backlog",
                "MB",
                r["max_rss_bytes"] / MB,
                60,
                "max",
                note="million bytes, as the target is written",
            )
        )
    growth = (runs[-1]["max_rss_bytes"] - runs[0]["max_rss_bytes"]) / MB
    figures.append(
        Figure(
            bench,
            f"RSS growth {runs[0]['count']:,} → {runs[-1]['count']:,}",
            "MB",
            growth,
            None,
            None,
            note="flat means ≈ 0",
        )
    )
    if len(runs) > 2:
        # A 1,000-reading drain is over in milliseconds; from the middle size up, the
        # difference is what a bigger backlog itself costs.
        figures.append(
            Figure(
                bench,
                f"RSS growth {runs[-2]['count']:,} → {runs[-1]['count']:,}",
                "MB",
                (runs[-1]["max_rss_bytes"] - runs[-2]["max_rss_bytes"]) / MB,
            )
        )
    return BenchResult(bench, figures, {"runs": runs})
