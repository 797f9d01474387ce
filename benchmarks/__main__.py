"""Run the benchmarks: ``python -m benchmarks [--quick] [NAME ...]``.

NAME is one of throughput, latency, backlog, fanout, or a group: pipeline
(throughput, latency, backlog) and all (the default). Prints a table and writes
benchmarks/results/<time>.json and benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import backlog, fanout, pipeline
from benchmarks.harness import BenchError, load_average, raise_open_files_limit, system_cpu
from benchmarks.plan import FULL, QUICK, Plan
from benchmarks.report import RESULTS, BenchResult, table, write_json

Runner = Callable[[Plan, Path | None], BenchResult]

BENCHMARKS: dict[str, Runner] = {
    "throughput": pipeline.run_throughput,
    "latency": pipeline.run_latency,
    "backlog": lambda plan, _profile: backlog.run_backlog(plan),
    "fanout": lambda plan, _profile: fanout.run_fanout(plan),
}
GROUPS = {
    "pipeline": ["throughput", "latency", "backlog"],
    "all": list(BENCHMARKS),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="default: all")
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
        t0, load0, (busy0, total0) = time.monotonic(), load_average(), system_cpu()
        try:
            result = BENCHMARKS[name](plan, profile_dir)
        except (BenchError, OSError, ValueError, KeyError) as exc:
            traceback.print_exc()
            result = BenchResult(name, error=f"{type(exc).__name__}: {exc}")
        result.seconds = time.monotonic() - t0
        busy1, total1 = system_cpu()
        # Other work on the machine skews every figure: say how busy it was.
        result.machine = {
            "load_average_before": load0,
            "load_average_after": load_average(),
            "machine_busy_percent": round(100 * (busy1 - busy0) / (total1 - total0), 1),
        }
        results.append(result)
    print(table(results))
    for r in results:
        if r.machine.get("load_average_before", 0) > 1.0:
            print(
                f"warning: {r.name} started with a load average of "
                f"{r.machine['load_average_before']:.1f}: other work competed for the CPU",
                file=sys.stderr,
            )
    path = write_json(results, plan.name, started)
    print(f"\nJSON: {path} (and {path.parent / 'latest.json'})")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
