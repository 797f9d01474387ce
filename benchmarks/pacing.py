"""The pacing sweep: ``python -m benchmarks.pacing [--quick] [--repeats N]``.

The ``latency`` benchmark's gateway run (1,000 lines/s on a pty, durability full, MQTT
to a local broker) under several settings of the serial ``read_interval`` and the
store's ``commit_spacing``, the variants alternating within each repeat so that the
defaults are measured in the same minutes as the others. Prints p50/p99, the line →
read p99, CPU, bytes written per reading and commits per second for every run, and
writes them to ``benchmarks/results/pacing-<UTC time>.json``. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from benchmarks.pipeline import Variant, measure_paced
from benchmarks.plan import FULL, QUICK
from benchmarks.report import RESULTS

VARIANTS = [
    Variant("defaults (18 ms / 5 ms)"),
    Variant("5 ms / 2 ms", {"commit_spacing": "2ms"}, {"read_interval": "5ms"}),
    Variant("2 ms / 1 ms", {"commit_spacing": "1ms"}, {"read_interval": "2ms"}),
    Variant("none (0 / 0)", {"commit_spacing": 0}, {"read_interval": 0}),
]


def summary(variant: Variant, run: dict[str, Any]) -> dict[str, Any]:
    breakdown = run["breakdown"]
    return {
        "variant": variant.name,
        "p50_ms": run["latency"]["p50_ms"],
        "p99_ms": run["latency"]["p99_ms"],
        "line_to_read_p99_ms": run["latency_line_to_read"]["p99_ms"],
        "cpu_percent": run["cpu_percent"],
        "write_bytes_per_reading": run["write_bytes_per_reading"],
        "lost": run["written"] - run["received"],
        "commits_per_s": breakdown.get("commits_per_s"),
        "threads_cpu_percent": breakdown["threads_cpu_percent"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pacing", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 s windows instead of 10 s")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the variants")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    rows = []
    for _ in range(args.repeats):
        for variant in VARIANTS:
            row = summary(variant, measure_paced("gateway", plan, variant=variant))
            rows.append(row)
            print(
                f"{row['variant']:<24} p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
                f"line → read p99 {row['line_to_read_p99_ms']:6.1f} ms  "
                f"CPU {row['cpu_percent']:5.1f}%  {row['write_bytes_per_reading']:6.0f} B/reading  "
                f"{row['commits_per_s']:5.0f} commits/s  lost {row['lost']}",
                flush=True,
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / time.strftime("pacing-%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.write_text(json.dumps({"plan": plan.name, "runs": rows}, indent=1))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
