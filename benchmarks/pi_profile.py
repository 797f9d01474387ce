"""The Pi-class profile: the pipeline with a tenth of one core.

The target (the gateway, or one naive baseline process per device) is pinned to one
core and capped by a cgroup CPU quota at 10% of it (``cpu.max`` "10000 100000"), with
four devices at 250 lines/s each written by this process: latency line → subscriber,
the fraction of lines delivered and the target's CPU; then a short search for the
highest total rate it sustains under the cap (every line written in a step arrives
within a second of the step's end). Where no cgroup can be written, the profile is skipped
and says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.cpu_cap import CapUnavailable, CpuCap, cpu_cap
from benchmarks.harness import (
    BenchError,
    Child,
    Gateway,
    GatewayConfig,
    PtyLink,
    private_broker,
    python_module,
    scratch_dir,
    snapshot,
    wait_for,
)
from benchmarks.pipeline import progress, subscriber
from benchmarks.plan import Plan
from benchmarks.report import BenchResult, Figure
from benchmarks.stats import LatencySplit, latency_summary
from tests.support.mosquitto import Mosquitto

CPU_SHARE = 0.10
DEVICES = 4
RATE_PER_DEVICE = 250.0
# Under the cap a reading can wait out a throttled CFS period (90 ms) more than once.
DRAIN_GRACE = 3.0
# A search step keeps up when its last lines arrive this soon after it ends: over a
# window of 10 s, a target at capacity c passes at up to 1.1 c at most.
STEP_GRACE = 1.0
SEARCH_START = 1000.0
SEARCH_FLOOR = 60.0
SEARCH_CEILING = 64_000.0
SEARCH_BISECTIONS = 2
# Starting Python at a tenth of a core takes several seconds.
START_TIMEOUT = 120.0


class SpreadWriter:
    """Writes counter lines round-robin over several links at a total rate, on a thread.

    Unlike ``PacedWriter`` it never blocks past its window: a line is written only
    when its pty has room (a target that stops reading fills the pty), and lines it
    could not write in time are not written at all. ``n`` is unique across links, so
    one arrival map serves every device.
    """

    def __init__(self, links: list[PtyLink], rate: float, duration: float, first: int) -> None:
        self.links = links
        self.rate = rate
        self.duration = duration
        self.first = first
        self.written: dict[int, float] = {}
        self.offered = int(rate * duration)
        self._thread = threading.Thread(target=self._run, name="spread-writer", daemon=True)

    def __enter__(self) -> SpreadWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()

    def _write(self, link: PtyLink, data: bytes, end: float) -> bool:
        view = memoryview(data)
        while view:
            left = end - time.monotonic()
            if left <= 0:
                return False
            poller = select.poll()
            poller.register(link.master, select.POLLOUT)
            if not poller.poll(1000 * left):
                return False
            view = view[os.write(link.master, view) :]
        return True

    def _run(self) -> None:
        period = 1.0 / self.rate
        start = time.monotonic()
        end = start + self.duration
        for k in range(self.offered):
            due = start + k * period
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            n = self.first + k
            written_at = time.time()
            if not self._write(self.links[k % len(self.links)], b"n=%d\n" % n, end):
                return
            self.written[n] = written_at


@dataclass
class Capped:
    """A target under the cap: its processes and how to read its CPU."""

    kind: str
    cap: CpuCap
    processes: list[Child | Gateway] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.processes]

    def cpu_seconds(self) -> float:
        return sum(snapshot(pid).cpu_seconds for pid in self.pids)


@contextlib.contextmanager
def capped_target(
    kind: str, cap: CpuCap, work: Path, broker: Mosquitto, links: list[PtyLink]
) -> Iterator[Capped]:
    """The gateway reading every link, or one naive baseline per link, under ``cap``."""
    target = Capped(kind, cap)
    try:
        if kind == "gateway":
            devices = [(f"pi-{i}", link.path) for i, link in enumerate(links, 1)]
            gw = Gateway(GatewayConfig(work, devices, broker.url))
            target.processes.append(gw)
            cap.add(gw.pid)
            gw.wait_healthy(START_TIMEOUT)
        else:
            for i, link in enumerate(links, 1):
                argv = python_module(
                    "benchmarks.naive_baseline",
                    *("--serial", str(link.path), "--port", str(broker.port)),
                    *("--device", f"naive-{i}"),
                )
                child = Child(f"naive-{i}", argv, work)
                target.processes.append(child)
                cap.add(child.pid)
        yield target
    finally:
        for p in target.processes:
            p.stop()


def distinct(sub: Child) -> int:
    return int(progress(sub)["distinct"])


def drain(sub: Child, expected: int, grace: float) -> int:
    """Wait up to ``grace`` s for ``expected`` distinct readings; return how many came."""
    with contextlib.suppress(BenchError):
        wait_for(lambda: distinct(sub) >= expected, grace, "")
    return distinct(sub)


def settle(sub: Child, timeout: float, quiet: float = 1.0) -> None:
    """Let a backlog from an unsustained step arrive before the next step starts."""
    deadline = time.monotonic() + timeout
    last = -1
    while (now := distinct(sub)) != last and time.monotonic() < deadline:
        last = now
        time.sleep(quiet)


def prime(sub: Child, links: list[PtyLink], timeout: float) -> int:
    """Write to every link until each device's lines come through (ports open late)."""
    n = 1
    deadline = time.monotonic() + timeout
    for link in links:
        before = distinct(sub)
        while distinct(sub) == before:
            if time.monotonic() > deadline:
                raise BenchError(f"no primed line came through on {link.path}")
            link.write(b"n=%d\n" % n)
            n += 1
            time.sleep(0.1)
    settle(sub, timeout)
    return n


def search(
    sub: Child, links: list[PtyLink], window: float, first: int
) -> tuple[float | None, list[dict[str, Any]]]:
    """The highest total rate whose every line arrives; the steps tried."""
    steps: list[dict[str, Any]] = []

    def step(rate: float) -> bool:
        nonlocal first
        before = distinct(sub)
        with SpreadWriter(links, rate, window, first) as writer:
            pass
        first += writer.offered
        got = drain(sub, before + len(writer.written), STEP_GRACE) - before
        # A writer that could not keep its pace counts against the target: the pty
        # was full because the target did not read.
        ok = got >= len(writer.written) >= 0.98 * writer.offered
        steps.append(
            {
                "rate": rate,
                "offered": writer.offered,
                "written": len(writer.written),
                "delivered": got,
                "sustained": ok,
            }
        )
        if not ok:
            settle(sub, 60.0)
        return ok

    good: float | None = None
    bad: float | None = None
    rate = SEARCH_START
    while SEARCH_FLOOR <= rate <= SEARCH_CEILING:
        if step(rate):
            good = rate
            if bad is not None:
                break
            rate *= 2
        else:
            bad = rate
            if good is not None:
                break
            rate /= 2
    if good is not None and bad is not None:
        for _ in range(SEARCH_BISECTIONS):
            mid = round((good + bad) / 2)
            if step(mid):
                good = mid
            else:
                bad = mid
    return good, steps


def measure(kind: str, plan: Plan, cap: CpuCap) -> dict[str, Any]:
    """The 4 x 250/s run and the rate search for one target under ``cap``."""
    work = scratch_dir(f"pi-{kind}")
    arrivals_path = work / "arrivals.json"
    links = [PtyLink(work / f"tty-pi-{i}") for i in range(1, DEVICES + 1)]
    rate = DEVICES * RATE_PER_DEVICE
    try:
        with private_broker(work) as broker:
            fmt = "gateway" if kind == "gateway" else "naive"
            sub = subscriber(work, broker, fmt, arrivals_path)
            try:
                with capped_target(kind, cap, work, broker, links) as target:
                    first = prime(sub, links, START_TIMEOUT)
                    throttled0 = cap.throttling()
                    with SpreadWriter(links, rate, plan.warmup + plan.paced_window, first) as w:
                        time.sleep(plan.warmup)
                        t0, cpu0 = time.monotonic(), target.cpu_seconds()
                        time.sleep(plan.paced_window)
                        t1, cpu1 = time.monotonic(), target.cpu_seconds()
                    throttled1 = cap.throttling()
                    before = distinct(sub)
                    drain(sub, before + w.offered, DRAIN_GRACE)
                    settle(sub, 60.0)
                    best, steps = search(sub, links, plan.paced_window, first + w.offered)
            finally:
                sub.stop()
        arrivals = {int(k): v for k, v in json.loads(arrivals_path.read_text()).items()}
        measured_from = first + int(plan.warmup * rate)
        offered = range(measured_from, first + w.offered)
        split = LatencySplit()
        for n in offered:
            if n in w.written and n in arrivals:
                split.add(w.written[n], *arrivals[n])
        return {
            "kind": kind,
            "processes": len(target.pids),
            "rate": rate,
            "offered": len(offered),
            "written": sum(1 for n in offered if n in w.written),
            "received": len(split.total),
            "delivered_fraction": len(split.total) / len(offered) if offered else None,
            "latency": latency_summary(split.total),
            "latency_line_to_read": latency_summary(split.to_read),
            "latency_read_to_arrival": latency_summary(split.after_read),
            "cpu_percent_of_core": 100 * (cpu1 - cpu0) / (t1 - t0),
            "throttling": {k: throttled1[k] - throttled0[k] for k in throttled1},
            "max_sustained_per_s": best,
            "search": steps,
        }
    finally:
        for link in links:
            link.close()
        shutil.rmtree(work, ignore_errors=True)


def run_pi(plan: Plan) -> BenchResult:
    bench = "pi-class"
    try:
        with cpu_cap(CPU_SHARE) as cap:
            where = f"cgroup v{cap.version} {cap.path}, core {cap.core}"
            naive = measure("naive", plan, cap)
            gw = measure("gateway", plan, cap)
    except CapUnavailable as exc:
        reason = f"skipped: no cgroup CPU quota can be written here ({exc})"
        print(f"pi-class: {reason}", file=sys.stderr)
        return BenchResult(bench, details={"skipped": reason}, notes=[reason])
    cap_percent = 100 * CPU_SHARE
    label = f"{DEVICES} x {RATE_PER_DEVICE:,.0f}/s"
    figures = [
        Figure(
            bench,
            f"latency p99, {label}",
            "ms",
            gw["latency"]["p99_ms"],
            baseline=naive["latency"]["p99_ms"],
        ),
        Figure(
            bench,
            f"delivered fraction, {label}",
            "",
            gw["delivered_fraction"],
            1.0,
            "min",
            naive["delivered_fraction"],
        ),
        Figure(
            bench,
            f"CPU share of the {cap_percent:.0f}% cap, {label}",
            "%",
            100 * gw["cpu_percent_of_core"] / cap_percent,
            baseline=100 * naive["cpu_percent_of_core"] / cap_percent,
        ),
        Figure(
            bench,
            "max sustained rate under the cap",
            "readings/s",
            gw["max_sustained_per_s"],
            baseline=naive["max_sustained_per_s"],
            note="every line of a step arrives",
        ),
    ]
    notes = [f"{where}, quota {cap.quota_us} us per {cap.period_us} us"]
    for r in (naive, gw):
        t = r["throttling"]
        steps = ", ".join(
            f"{s['rate']:,.0f}/s {'kept up' if s['sustained'] else 'fell behind'}"
            for s in r["search"]
        )
        notes.append(
            f"{r['kind']}: throttled in {t['throttled_periods']} of {t['periods']} periods "
            f"({t['throttled_s']:.1f} s); search {steps}"
        )
    return BenchResult(bench, figures, {"naive": naive, "gateway": gw}, notes=notes)
