"""Priority: a high-priority reading's delivery latency while a large backlog drains.

The log is filled with N readings owed to the uplink (``benchmarks.prefill``, what an
outage leaves), then the broker, the subscriber and the gateway start. Two devices
write a line every 20 ms during the drain: ``alarm-1`` with ``priority = "high"`` and
``live-1`` without. Latency = arrival at the subscriber - the reading's ``ts`` (when
the gateway read the line). The baseline is the normal device's latency in the same
run: its readings queue behind the backlog, the alarm's go out in the priority lane.

Each device has a subscriber of its own (a cloud consumer of alarms does not wait
behind the backlog in the broker's queue of another client); a third one counts the
backlog.

Two cases. **After an outage** (the target): the gateway ran through the outage, so its
priority lane followed the log over the backlog it does not carry and its cursor
(``mqtt:priority``) stands at the end, as prefill's ``--follower`` leaves it. **A new
lane** (information): priority was configured only now, over a backlog already there,
so the lane first reads the whole backlog for high-priority rows.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    BenchError,
    Child,
    Gateway,
    GatewayConfig,
    PtyLink,
    private_broker,
    python_module,
    scratch_dir,
)
from benchmarks.pipeline import progress
from benchmarks.plan import Plan
from benchmarks.report import BenchResult, Figure
from benchmarks.stats import latency_summary
from gateway.uplinks.route import PRIORITY_SUFFIX

LINE_INTERVAL = 0.02
DEVICES = ("backlog-1", "alarm-1", "live-1")
# A new priority lane first reads the whole backlog for high-priority rows (one scan of
# the log, seconds for 1,000,000 rows on a busy machine); alarms read meanwhile wait for
# it. The figure "after the first pass" leaves out the alarms read this long after start.
FIRST_PASS = 15.0


def _subscriber(work: Path, port: int, device: str) -> Child:
    """A subscriber of one device's telemetry, recording its counters' arrivals."""
    argv = python_module(
        "benchmarks.subscriber",
        *("--port", str(port), "--topic", f"edge/+/{device}/telemetry"),
        *("--arrivals", str(work / f"{device}.json")),
    )
    child = Child(f"subscriber-{device}", argv, work)
    child.wait_event("subscribed", 15)
    child.wait_event("progress", 5)
    return child


def measure(count: int, after_outage: bool) -> dict[str, Any]:
    work = scratch_dir(f"priority-{count}")
    followers = ("--follower", f"mqtt{PRIORITY_SUFFIX}") if after_outage else ()
    config_dir = work / "gw"
    config_dir.mkdir()
    alarm, live = PtyLink(work / "tty-alarm"), PtyLink(work / "tty-live")
    try:
        # The backlog's sensor is not the counter "n": only the live lines are timed.
        filled = Child(
            "prefill",
            python_module(
                "benchmarks.prefill",
                *("--data-dir", str(config_dir / "data"), "--count", str(count)),
                *("--sensor", "b"),
                *followers,
            ),
            work,
        )
        fill = filled.wait_event("done", 60 + count / 20_000)
        filled.stop()
        if fill["last_seq"] != count or fill["dropped"]:
            raise BenchError(f"prefill stored {fill['last_seq']} of {count} readings")
        with private_broker(work) as broker:
            subs = {name: _subscriber(work, broker.port, name) for name in DEVICES}
            try:
                config = GatewayConfig(
                    config_dir,
                    [("alarm-1", alarm.path), ("live-1", live.path)],
                    broker.url,
                    per_device={"alarm-1": {"priority": "high"}},
                )
                with Gateway(config):
                    started = time.time()
                    began_at, drained_at = _write_until_drained(
                        subs["backlog-1"], alarm, live, count
                    )
            finally:
                for sub in subs.values():
                    sub.stop()
        # Counter value -> (arrival, the reading's ts), per device.
        arrivals = {n: json.loads((work / f"{n}.json").read_text()) for n in ("alarm-1", "live-1")}
    finally:
        alarm.close()
        live.close()
    # Only readings read while the backlog drained.
    high, normal = (
        [arrived - ts for arrived, ts in arrivals[device].values() if ts < drained_at]
        for device in ("alarm-1", "live-1")
    )
    # Read once the drain was under way (the first backlog reading had arrived): before
    # that, an alarm waits for the uplink's connection, not behind the backlog.
    draining = [
        arrived - ts for arrived, ts in arrivals["alarm-1"].values() if began_at <= ts < drained_at
    ]
    settled = [
        arrived - ts
        for arrived, ts in arrivals["alarm-1"].values()
        if started + FIRST_PASS <= ts < drained_at
    ]
    shutil.rmtree(work, ignore_errors=True)
    return {
        "count": count,
        "after_outage": after_outage,
        "start_to_drained_seconds": drained_at - started,
        "start_to_first_backlog_seconds": began_at - started,
        "high": latency_summary(high),
        "high_while_draining": latency_summary(draining),
        "high_after_first_pass": latency_summary(settled),
        "normal": latency_summary(normal),
        "high_by_second": _by_second(arrivals["alarm-1"].values(), started, drained_at),
    }


def _by_second(arrivals: Iterable[list[float]], started: float, until: float) -> dict[int, float]:
    """The worst latency (ms) of the readings read in each second after the gateway's
    start: where in the drain the slow ones were."""
    worst: dict[int, float] = {}
    for arrived, ts in arrivals:
        if ts < until:
            second = int(ts - started)
            worst[second] = max(worst.get(second, 0.0), 1000 * (arrived - ts))
    return dict(sorted(worst.items()))


def _write_until_drained(
    sub: Child, alarm: PtyLink, live: PtyLink, count: int
) -> tuple[float, float]:
    """Write a line to each device every 20 ms until the subscriber has the backlog;
    return when its first backlog reading arrived and when it had them all (epoch
    seconds)."""
    deadline = time.monotonic() + 120 + count / 2_000
    began: float | None = None
    i = 0
    while time.monotonic() < deadline:
        i += 1
        alarm.write(b"n=%d\n" % i)
        live.write(b"n=%d\n" % i)
        distinct = progress(sub)["distinct"]
        if began is None and distinct > 0:
            began = time.time()
        if distinct >= count:
            return began if began is not None else time.time(), time.time()
        time.sleep(LINE_INTERVAL)
    raise BenchError(f"the backlog of {count} readings did not drain")


def run_priority(plan: Plan) -> BenchResult:
    count = plan.backlog_sizes[-1]
    outage, new_lane = measure(count, after_outage=True), measure(count, after_outage=False)
    bench = "priority"
    figures = [
        Figure(
            bench,
            f"high-priority p99 while {count:,} drain after an outage",
            "ms",
            outage["high_while_draining"]["p99_ms"],
            100,
            "max",
            baseline=outage["normal"]["p99_ms"],
            note=(
                f"alarms read once the drain was under way "
                f"({outage['high_while_draining']['count']}); baseline: a normal reading's p99"
            ),
        ),
        Figure(
            bench,
            "high-priority p99 after an outage, from the gateway's start",
            "ms",
            outage["high"]["p99_ms"],
            baseline=outage["normal"]["p99_ms"],
            note="includes alarms read before the uplink had connected",
        ),
        Figure(
            bench,
            f"high-priority p50 while {count:,} drain after an outage",
            "ms",
            outage["high"]["p50_ms"],
            baseline=outage["normal"]["p50_ms"],
            note="baseline: a normal reading's p50",
        ),
        Figure(
            bench,
            f"high-priority p99, a new lane over {count:,}",
            "ms",
            new_lane["high"]["p99_ms"],
            baseline=new_lane["normal"]["p99_ms"],
            note="priority configured only now: its lane first reads the whole backlog",
        ),
        Figure(
            bench,
            f"high-priority p99, a new lane, read {FIRST_PASS:g} s after start",
            "ms",
            new_lane["high_after_first_pass"]["p99_ms"],
            baseline=new_lane["normal"]["p99_ms"],
            note="after the new lane's first pass over the backlog",
        ),
    ]
    return BenchResult(bench, figures, {"after_outage": outage, "new_lane": new_lane})
