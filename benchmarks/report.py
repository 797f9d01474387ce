"""Figures, the table printed at the end of a run, and the JSON written beside it.

``python -m benchmarks.report [FILE]`` prints a result file (default: the latest)
as a Markdown table, for the documentation.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

RESULTS = Path(__file__).resolve().parent / "results"

Goal = Literal["min", "max"]  # the measured value must be at least / at most the target


@dataclass
class Figure:
    bench: str
    name: str
    unit: str
    measured: float | None
    target: float | None = None
    goal: Goal | None = None
    baseline: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Measured over baseline (for a throughput: how many times the baseline)."""
        if self.measured is None or not self.baseline:
            return None
        return self.measured / self.baseline

    @property
    def status(self) -> str:
        if self.target is None or self.goal is None:
            return "INFO"
        if self.measured is None:
            return "MISS"
        ok = self.measured >= self.target if self.goal == "min" else self.measured <= self.target
        return "PASS" if ok else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "status": self.status}


@dataclass
class BenchResult:
    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    machine: dict[str, float] = field(default_factory=dict)
    # One line each on where the time went, printed under the table.
    notes: list[str] = field(default_factory=list)


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in {"readings/s", "B", "readings", "receipts"} or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _target(f: Figure) -> str:
    if f.target is None or f.goal is None:
        return ""
    return ("≥ " if f.goal == "min" else "≤ ") + _num(f.target, f.unit)


def table(results: list[BenchResult]) -> str:
    header = ("benchmark", "figure", "unit", "target", "measured", "baseline", "ratio", "")
    rows: list[tuple[str, ...]] = [header]
    for result in results:
        if result.error:
            rows.append((result.name, "ERROR", "", "", "", "", "", result.error[:60]))
        for f in result.figures:
            ratio = f.ratio
            rows.append(
                (
                    f.bench,
                    f.name,
                    f.unit,
                    _target(f),
                    _num(f.measured, f.unit),
                    _num(f.baseline, f.unit),
                    "-" if ratio is None else f"{ratio:.2f}x",
                    f.status,
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {r.name}: {note}" for r in results for note in r.notes]
    if notes:
        lines += ["", "where the time goes:", *notes]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    # Read by hand: neither psutil nor platform names the CPU model on Linux.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def write_json(results: list[BenchResult], mode: str, started: float) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "mode": mode,
        "machine": machine(),
        "benchmarks": [
            {
                "name": r.name,
                "seconds": round(r.seconds, 1),
                "error": r.error,
                "machine": r.machine,
                "notes": r.notes,
                "figures": [f.as_dict() for f in r.figures],
                "details": r.details,
            }
            for r in results
        ],
    }
    text = json.dumps(doc, indent=2, default=str)
    path = RESULTS / (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + ".json")
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    return path


def markdown(doc: dict[str, Any]) -> str:
    """A result file's figures as a Markdown table, with the machine and its load."""
    m = doc["machine"]
    lines = [
        f"Run {doc['started']} ({doc['mode']}, {doc['seconds']:.0f} s) on {m['cpus']} x "
        f"{m['cpu_model']}, Python {m['python']}, Linux {m['kernel']}.",
        "",
        "| benchmark | figure | target | measured | baseline | ratio | |",
        "|---|---|---|---|---|---|---|",
    ]
    for bench in doc["benchmarks"]:
        if bench["error"]:
            lines.append(f"| {bench['name']} | error: {bench['error']} | | | | | |")
        for d in bench["figures"]:
            f = Figure(
                **{
                    k: d[k]
                    for k in (
                        "bench",
                        "name",
                        "unit",
                        "measured",
                        "target",
                        "goal",
                        "baseline",
                        "note",
                    )
                }
            )
            unit = "" if f.unit in {"x", "readings", "receipts"} else f" {f.unit}"
            ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
            target = _target(f) + (unit if f.target is not None else "")
            lines.append(
                f"| {f.bench} | {f.name} | {target} | {_num(f.measured, f.unit)}{unit} | "
                f"{_num(f.baseline, f.unit) if f.baseline is not None else ''} | {ratio} | "
                f"{f.status if f.status != 'INFO' else ''} |"
            )
    others = ", ".join(
        f"{b['name']} {b['machine'].get('others_busy_percent', 0):.0f}%"
        for b in doc["benchmarks"]
        if b.get("machine")
    )
    lines += ["", f"CPU used by other processes on the machine during each benchmark: {others}."]
    notes = [f"- {b['name']}: {n}" for b in doc["benchmarks"] for n in b.get("notes", [])]
    if notes:
        lines += ["", "Where the time goes:", "", *notes]
    return "\n".join(lines)


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "latest.json"
    print(markdown(json.loads(source.read_text())))
