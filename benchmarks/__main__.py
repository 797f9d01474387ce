"""Run the benchmarks: ``python -m benchmarks [--quick] [NAME ...]``.

NAME is one of the keys of BENCHMARKS below, or a group: pipeline (throughput,
latency, backlog) and all (the default: every one but fleet); `--help` lists them.
Prints a table and writes benchmarks/results/<time>.json and
benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    backlog,
    codecs,
    commands,
    consumer,
    fanout,
    fleet,
    modbus_bus,
    pi_profile,
    pipeline,
    priority,
    ws_uplink,
)
from benchmarks.harness import BenchError, load_average, raise_open_files_limit, system_cpu
from benchmarks.plan import FULL, QUICK, Plan
from benchmarks.report import RESULTS, BenchResult, table, write_json

Runner = Callable[[Plan, Path | None], BenchResult]
# Share of the machine's CPU used by processes other than the benchmark's, in %,
# above which a benchmark's figures are flagged.
OTHERS_BUSY_WARNING = 5.0

BENCHMARKS: dict[str, Runner] = {
    "throughput": pipeline.run_throughput,
    "latency": pipeline.run_latency,
    "backlog": lambda plan, _profile: backlog.run_backlog(plan),
    "fanout": lambda plan, _profile: fanout.run_fanout(plan),
    "pi": lambda plan, _profile: pi_profile.run_pi(plan),
    "commands": lambda plan, _profile: commands.run_commands(plan),
    "modbus": lambda plan, _profile: modbus_bus.run_modbus(plan),
    "codecs": lambda plan, _profile: codecs.run_codecs(plan),
    "priority": lambda plan, _profile: priority.run_priority(plan),
    "consumer": lambda plan, _profile: consumer.run_consumer(plan),
    "fleet": lambda plan, _profile: fleet.run_fleet(plan),
    "ws_uplink": lambda plan, _profile: ws_uplink.run_ws_uplink(plan),
}
GROUPS = {
    "pipeline": ["throughput", "latency", "backlog"],
    # The fleet of 200 gateways takes a quarter of an hour: run it by name.
    "all": [name for name in BENCHMARKS if name != "fleet"],
}


def own_cpu_seconds() -> float:
    """CPU of this process and of every child it has waited for (their children too)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"default: all; one of {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 60 s)")
    parser.add_argument("--devices", type=int, help="counter devices feeding the gateway")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the gateway under cProfile in throughput and latency (results/*.prof)",
    )
    args = parser.parse_args()

    plan = QUICK if args.quick else FULL
    if args.devices:
        plan = dataclasses.replace(plan, devices=args.devices)
    names: list[str] = []
    for name in args.names or ["all"]:
        if name not in BENCHMARKS and name not in GROUPS:
            parser.error(f"unknown benchmark {name!r}; one of {', '.join([*BENCHMARKS, *GROUPS])}")
        for n in GROUPS.get(name, [name]):
            if n not in names:
                names.append(n)
    # 1,000 WebSocket clients and their sockets in one process tree.
    raise_open_files_limit(8192)
    profile_dir = RESULTS if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)

    started = time.time()
    results: list[BenchResult] = []
    for name in names:
        print(f"running {name} ({plan.name}) ...", file=sys.stderr, flush=True)
        t0, load0, (busy0, total0), own0 = (
            time.monotonic(),
            load_average(),
            system_cpu(),
            own_cpu_seconds(),
        )
        try:
            result = BENCHMARKS[name](plan, profile_dir)
        except (BenchError, OSError, ValueError, KeyError) as exc:
            traceback.print_exc()
            result = BenchResult(name, error=f"{type(exc).__name__}: {exc}")
        result.seconds = time.monotonic() - t0
        (busy1, total1), own1 = system_cpu(), own_cpu_seconds()
        # Other work on the machine skews every figure: say how much there was. Every
        # process a benchmark starts has been waited for by now, so its CPU is in ours.
        result.machine = {
            "load_average_before": load0,
            "load_average_after": load_average(),
            "machine_busy_percent": round(100 * (busy1 - busy0) / (total1 - total0), 1),
            "others_busy_percent": round(
                100 * max(0.0, (busy1 - busy0) - (own1 - own0)) / (total1 - total0), 1
            ),
        }
        results.append(result)
    print(table(results))
    for r in results:
        if r.machine.get("others_busy_percent", 0) > OTHERS_BUSY_WARNING:
            print(
                f"warning: other processes used {r.machine['others_busy_percent']:.0f}% of the "
                f"machine's CPU during {r.name}: its figures are skewed",
                file=sys.stderr,
            )
    path = write_json(results, plan.name, started)
    print(f"\nJSON: {path} (and {path.parent / 'latest.json'})")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
