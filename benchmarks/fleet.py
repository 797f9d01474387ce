"""Fleet: memory and CPU per gateway with N gateways on this machine, and what it delivers.

Runs ``edge-gateway fleet-sim`` twice against a private mosquitto: one gateway (the
baseline: what a gateway costs alone) and N gateways (200 in the full run) at
1.5 readings/s each, with kill -9 of 10% of them and a blackholed link for
another 10% under load. Every figure per gateway is also given as a ratio to the
single gateway's. The run passes when every log is acknowledged at the end (the
fleet's drain) and no gateway exited on its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import BenchError, private_broker, python_module, scratch_dir
from benchmarks.plan import Plan
from benchmarks.report import BenchResult, Figure

MIB = 1024 * 1024
RATE = 1.5  # readings per second per gateway (one counter device)


@dataclass(frozen=True, slots=True)
class FleetPlan:
    gateways: int
    duration: float  # seconds once every gateway has started
    faults: tuple[str, ...]


def plan_for(plan: Plan) -> FleetPlan:
    if plan.name == "quick":
        return FleetPlan(20, 20.0, ("kill9:0.1@5", "blackhole:0.1@8+5"))
    return FleetPlan(200, 150.0, ("kill9:0.1@40", "blackhole:0.1@70+30"))


def fleet_run(gateways: int, duration: float, faults: tuple[str, ...]) -> dict[str, Any]:
    """One ``fleet-sim`` run; its report, with how long the start took."""
    work = scratch_dir(f"fleet-{gateways}")
    try:
        with private_broker(work) as broker:
            argv = python_module(
                "gateway",
                "fleet-sim",
                str(gateways),
                "--broker",
                broker.url,
                "--dir",
                str(work / "fleet"),
                "--rate",
                str(RATE),
                "--duration",
                str(duration),
                "--drain",
                "300",
                "--seed",
                "1",
                *(arg for fault in faults for arg in ("--fault", fault)),
            )
            t0 = time.monotonic()
            log = (work / "fleet-sim.log").open("wb")
            result = subprocess.run(argv, stderr=log, check=False, timeout=3600)
            log.close()
            output = (work / "fleet-sim.log").read_text(errors="replace")
            if result.returncode != 0:
                raise BenchError(f"fleet-sim {gateways} exited {result.returncode}:\n{output}")
            report: dict[str, Any] = json.loads((work / "fleet/fleet-report.json").read_text())
            report["wall_seconds"] = time.monotonic() - t0
            report["started_in"] = _started_in(output)
            return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _started_in(output: str) -> float | None:
    for line in output.splitlines():
        if " started in " in line:
            return float(line.rsplit(" started in ", 1)[1].split()[0])
    return None


def _median(report: dict[str, Any], name: str) -> float | None:
    spread = report["usage"].get(name)
    return None if spread is None else float(spread["median"])


def run_fleet(plan: Plan) -> BenchResult:
    fp = plan_for(plan)
    base = fleet_run(1, min(fp.duration, 30.0), ())
    fleet = fleet_run(fp.gateways, fp.duration, fp.faults)
    result = BenchResult("fleet")
    n = fp.gateways
    for name, unit, scale, label in (
        ("pss_bytes", "MiB", MIB, "PSS per gateway (median)"),
        ("rss_bytes", "MiB", MIB, "RSS per gateway (median)"),
        ("cpu_percent", "% core", 1.0, "CPU per gateway (median)"),
    ):
        measured, baseline = _median(fleet, name), _median(base, name)
        result.figures.append(
            Figure(
                "fleet",
                f"{label}, {n} gateways",
                unit,
                None if measured is None else measured / scale,
                baseline=None if baseline is None else baseline / scale,
                note="baseline: 1 gateway alone",
            )
        )
    pss_total = fleet["usage"]["pss_bytes"]["total"] if fleet["usage"]["pss_bytes"] else None
    cpu_total = fleet["usage"]["cpu_percent"]["total"]
    result.figures += [
        Figure(
            "fleet",
            f"PSS of all {n} gateways",
            "MiB",
            None if pss_total is None else pss_total / MIB,
        ),
        Figure("fleet", f"CPU of all {n} gateways", "% core", cpu_total),
        Figure(
            "fleet",
            "CPU of the simulator (devices, proxies)",
            "% core",
            fleet["simulator"].get("cpu_percent"),
        ),
        Figure("fleet", f"time to start {n} gateways", "s", fleet["started_in"]),
        Figure(
            "fleet",
            "readings unsent after the drain",
            "readings",
            fleet["unsent"],
            target=0,
            goal="max",
        ),
        Figure(
            "fleet",
            "gateways that exited on their own",
            "gateways",
            fleet["unexpected_exits"],
            target=0,
            goal="max",
        ),
    ]
    result.details = {
        "gateways": n,
        "rate_per_gateway": RATE,
        "duration": fp.duration,
        "faults": fleet["faults"],
        "readings": fleet["readings"],
        "baseline": {k: base[k] for k in ("usage", "simulator", "started_in")},
        "fleet": {k: fleet[k] for k in ("usage", "simulator", "started_in", "wall_seconds")},
        "members": fleet["members"],
    }
    return result
