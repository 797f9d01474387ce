"""The latency, CPU and disk levers at 1,000 lines/s: ``python -m benchmarks.levers``.

The ``latency`` benchmark's gateway run (1,000 lines/s on a pty, durability full, MQTT
to a local broker) for each lever against the baseline (the settings as they were
before these levers were measured), the variants alternating within each repeat so
that each shares its minutes with the baseline. Per variant: the median over the
repeats of p50/p99, CPU seconds per 1,000 readings, bytes written per reading and
commits per second, each also as a ratio to the baseline's median; every run is in
the JSON (``benchmarks/results/levers-<UTC time>.json``). ``--throughput`` adds the
max-rate throughput of the baseline and of the chosen settings (``--chosen``).
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from benchmarks.harness import BenchError
from benchmarks.pipeline import PACED_RATE, Variant, measure_paced, measure_throughput
from benchmarks.plan import Plan
from benchmarks.report import RESULTS

# What every run shares: the pacing before this round, so that each lever is compared
# with the settings it would change.
BEFORE_DEVICE: dict[str, object] = {"read_interval": "18ms"}
BEFORE_STORE: dict[str, object] = {"commit_spacing": "5ms"}
BEFORE_LEVERS = ("--meta-every-commit",)
MIB = 1024 * 1024

BASELINE = Variant("baseline (before)", BEFORE_STORE, BEFORE_DEVICE, BEFORE_LEVERS)

VARIANTS = [
    BASELINE,
    Variant("last_seq only on delete", BEFORE_STORE, BEFORE_DEVICE),
    Variant("512 B pages", BEFORE_STORE, BEFORE_DEVICE, (*BEFORE_LEVERS, "--page-size", "512")),
    Variant("uvloop", BEFORE_STORE, BEFORE_DEVICE, (*BEFORE_LEVERS, "--uvloop")),
    Variant(
        "pace 10 ms / 3 ms", {"commit_spacing": "3ms"}, {"read_interval": "10ms"}, BEFORE_LEVERS
    ),
    Variant("pace 4 ms / 2 ms", {"commit_spacing": "2ms"}, {"read_interval": "4ms"}, BEFORE_LEVERS),
    Variant("pace 2 ms / 1 ms", {"commit_spacing": "1ms"}, {"read_interval": "2ms"}, BEFORE_LEVERS),
    Variant("no pacing (0 / 0)", {"commit_spacing": 0}, {"read_interval": 0}, BEFORE_LEVERS),
    Variant(
        "tty VMIN 40 B, no pacing",
        {"commit_spacing": "2ms"},
        {"read_interval": 0},
        (*BEFORE_LEVERS, "--vmin", "40"),
    ),
    Variant(
        "combined: VMIN 40 B, uvloop, last_seq only on delete",
        {"commit_spacing": "2ms"},
        {"read_interval": 0},
        ("--vmin", "40", "--uvloop"),
    ),
]
# Measured in earlier rounds; not in the default sweep (the disk levers are measured
# without the machine's load by benchmarks.store_wear).
MORE = [
    Variant(
        "pace 4 ms / 2 ms, durability normal",
        {"commit_spacing": "2ms", "durability": "normal"},
        {"read_interval": "4ms"},
    ),
    Variant(
        "no pacing (0 / 0), durability normal",
        {"commit_spacing": 0, "durability": "normal"},
        {"read_interval": 0},
    ),
    Variant(
        "checkpoint at 16 MiB",
        BEFORE_STORE,
        BEFORE_DEVICE,
        (*BEFORE_LEVERS, "--autocheckpoint-bytes", str(16 * MIB)),
    ),
    Variant(
        "journal_size_limit 0",
        BEFORE_STORE,
        BEFORE_DEVICE,
        (*BEFORE_LEVERS, "--journal-size-limit", "0"),
    ),
]

PLAN = Plan(
    name="levers", warmup=2.0, window=6.0, paced_window=6.0, backlog_sizes=(), fanout_clients=()
)


def summary(variant: Variant, run: dict[str, Any]) -> dict[str, Any]:
    breakdown = run["breakdown"]
    return {
        "variant": variant.name,
        "p50_ms": run["latency"]["p50_ms"],
        "p99_ms": run["latency"]["p99_ms"],
        "line_to_read_p99_ms": run["latency_line_to_read"]["p99_ms"],
        # % of a core at ``rate`` readings/s → CPU seconds per 1,000 readings.
        "cpu_s_per_1000": run["cpu_percent"] / 100 * 1000 / run["rate"],
        # The gateway's CPU per commit cycle (read, commit, message, acknowledgement).
        "cpu_ms_per_commit": 10 * run["cpu_percent"] / breakdown["commits_per_s"]
        if breakdown.get("commits_per_s")
        else None,
        "write_bytes_per_reading": run["write_bytes_per_reading"],
        "lost": run["written"] - run["received"],
        "commits_per_s": breakdown.get("commits_per_s"),
        "threads_cpu_percent": breakdown["threads_cpu_percent"],
    }


FIGURES = (
    "p50_ms",
    "p99_ms",
    "line_to_read_p99_ms",
    "cpu_s_per_1000",
    "cpu_ms_per_commit",
    "write_bytes_per_reading",
    "commits_per_s",
)


def medians(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        out[name] = {f: statistics.median(r[f] for r in mine if r[f] is not None) for f in FIGURES}
        out[name]["lost"] = max(r["lost"] for r in mine)
    return out


def table(meds: dict[str, dict[str, float]]) -> str:
    base = meds[BASELINE.name]
    lines = [
        "| variant | p50 ms | p99 ms (x base) | CPU s / 1,000 (x base) | B / reading (x base) "
        "| commits/s | lost |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in meds.items():
        lines.append(
            f"| {name} | {m['p50_ms']:.1f} "
            f"| {m['p99_ms']:.1f} ({m['p99_ms'] / base['p99_ms']:.2f}) "
            f"| {m['cpu_s_per_1000']:.3f} ({m['cpu_s_per_1000'] / base['cpu_s_per_1000']:.2f}) "
            f"| {m['write_bytes_per_reading']:,.0f} "
            f"({m['write_bytes_per_reading'] / base['write_bytes_per_reading']:.2f}) "
            f"| {m['commits_per_s']:.0f} | {m['lost']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the variants")
    parser.add_argument(
        "--only", action="append", default=[], help="variant names to run (with the baseline)"
    )
    parser.add_argument("--throughput", action="store_true", help="also max rate, 3 rounds")
    parser.add_argument("--rate", type=float, default=PACED_RATE, help="lines/s (1,000)")
    args = parser.parse_args()
    every = VARIANTS + MORE
    chosen = args.only or [v.name for v in VARIANTS]
    variants = [v for v in every if v is BASELINE or v.name in chosen]
    rows = []
    for _ in range(args.repeats):
        for variant in variants:
            try:
                row = summary(
                    variant, measure_paced("gateway", PLAN, rate=args.rate, variant=variant)
                )
            except BenchError as e:
                # A loaded machine can keep one start from becoming healthy in time.
                print(f"{variant.name:<28} failed: {e}", flush=True)
                continue
            rows.append(row)
            print(
                f"{row['variant']:<28} p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
                f"line → read p99 {row['line_to_read_p99_ms']:6.1f} ms  "
                f"CPU {row['cpu_s_per_1000']:.3f} s/1000  "
                f"{row['write_bytes_per_reading']:6.0f} B/reading  "
                f"{row['commits_per_s']:5.0f} commits/s  lost {row['lost']}",
                flush=True,
            )
    meds = medians(rows)
    print("\nMedians over the repeats (ratios to the baseline of the same run):\n")
    print(table(meds))
    throughput: list[dict[str, Any]] = []
    if args.throughput:
        for _ in range(3):
            for variant in (BASELINE, Variant("defaults now")):
                run = measure_throughput("gateway", PLAN, variant=variant)
                delivered = run["delivered_per_s"]
                throughput.append({"variant": variant.name, "delivered_per_s": delivered})
                print(f"max rate, {variant.name}: {run['delivered_per_s']:,.0f}/s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / time.strftime("levers-%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.write_text(json.dumps({"runs": rows, "medians": meds, "throughput": throughput}, indent=1))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
