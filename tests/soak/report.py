"""The soak report: `summary.md`, PNG plots (matplotlib, Agg) and the raw samples as CSV.

Written whatever the outcome, an aborted campaign included, so a failure can be read
in the same place as a success.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from tests.soak.ledger import Verdict
from tests.soak.sampler import Sample
from tests.soak.trend import Trend

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FaultEvent:
    kind: str
    start: float  # seconds since the campaign's start
    end: float
    detail: str


@dataclass
class Outcome:
    campaign: str
    parameters: dict[str, object]
    started_utc: str
    events: list[FaultEvent] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    campaign_end: float | None = None  # when the last fault was over
    round_ends: list[float] = field(default_factory=list)
    verdict: Verdict | None = None
    trends: list[Trend] = field(default_factory=list)
    dropped: int = 0
    stop_code: int | None = None
    integrity: str | None = None
    moved_aside: int = 0
    unplugs: int = 0
    error: str | None = None

    def failures(self) -> list[str]:
        found = [] if self.error is None else [f"campaign aborted: {self.error}"]
        if self.verdict is not None:
            v = self.verdict
            if v.lost:
                found.append(f"{len(v.lost)} committed readings lost, e.g. seqs {v.lost[:10]}")
            if v.reused:
                r = v.reused[0]
                found.append(
                    f"{len(v.reused)} seqs reused with other content, e.g. seq {r.seq}: "
                    f"{r.first} then {r.other}"
                )
            if v.out_of_order:
                found.append(f"readings out of order for {', '.join(v.out_of_order)}")
            found += [f"database not fully readable: {e}" for e in v.read_errors]
        elif self.error is None:
            found.append("no verdict")
        if self.dropped:
            found.append(f"the gateway dropped {self.dropped} readings")
        if self.stop_code not in (None, 0):
            found.append(f"the final SIGTERM ended the gateway with {self.stop_code}")
        found += [f"trend: {t.describe()}" for t in self.trends if not t.ok]
        return found


def write(outcome: Outcome, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    _write_csv(directory / "samples.csv", outcome.samples)
    _write_csv(directory / "faults.csv", outcome.events)
    plots = _plot(outcome, directory)
    summary = directory / "summary.md"
    summary.write_text(_markdown(outcome, plots))
    return summary


def _write_csv(path: Path, rows: Sequence[Sample] | Sequence[FaultEvent]) -> None:
    with path.open("w", newline="") as f:
        writer: csv.DictWriter[str] | None = None
        for row in rows:
            record = dataclasses.asdict(row)
            if writer is None:
                writer = csv.DictWriter(f, fieldnames=list(record))
                writer.writeheader()
            writer.writerow(record)


@dataclass(frozen=True, slots=True)
class _Metric:
    file: str
    title: str
    unit: str
    value: Callable[[Sample], float | None]
    trend: str | None = None  # the Trend.bound.metric drawn on it


def _mib(s: Sample) -> float | None:
    return None if s.rss is None else s.rss / MIB


def _float(value: int | float | None) -> float | None:
    return None if value is None else float(value)


METRICS = (
    _Metric("rss.png", "Gateway RSS", "MiB", _mib, trend="RSS"),
    _Metric("fds.png", "Gateway open file descriptors", "fds", lambda s: _float(s.fds), "fds"),
    _Metric("depth.png", "Store depth (unsent readings)", "readings", lambda s: _float(s.depth)),
    _Metric("lag.png", "Delivery lag (age of the oldest unsent reading)", "s", lambda s: s.lag),
    _Metric("cpu.png", "Gateway CPU", "% of one core", lambda s: s.cpu),
)


def _plot(outcome: Outcome, directory: Path) -> list[str]:
    if not outcome.samples:
        return []
    files = []
    for metric in METRICS:
        fig, (timeline, ax) = plt.subplots(
            2, 1, figsize=(12, 5), sharex=True, height_ratios=[1, 3], layout="constrained"
        )
        _timeline(timeline, outcome)
        _draw(ax, metric, outcome)
        ax.set_xlabel("seconds since the campaign started")
        fig.savefig(directory / metric.file, dpi=100)
        plt.close(fig)
        files.append(metric.file)
    fig, axes = plt.subplots(
        len(METRICS) + 1,
        1,
        figsize=(12, 2.0 + 2.4 * len(METRICS)),
        sharex=True,
        height_ratios=[1.4] + [2.0] * len(METRICS),
        layout="constrained",
    )
    _timeline(axes[0], outcome)
    for ax, metric in zip(axes[1:], METRICS, strict=True):
        _draw(ax, metric, outcome)
    axes[-1].set_xlabel("seconds since the campaign started")
    fig.savefig(directory / "overview.png", dpi=90)
    plt.close(fig)
    return ["overview.png", *files]


def _timeline(ax: Axes, outcome: Outcome) -> None:
    """One row per kind of fault, a bar per step: from the injection until delivery resumed."""
    kinds = list(dict.fromkeys(e.kind for e in outcome.events))
    for row, kind in enumerate(kinds):
        events = [e for e in outcome.events if e.kind == kind]
        ax.broken_barh(
            [(e.start, max(e.end - e.start, 0.2)) for e in events],
            (row - 0.4, 0.8),
            facecolors=f"C{row % 10}",
            edgecolors=["red" if e.detail.startswith("FAILED") else "none" for e in events],
            linewidth=2.0,
        )
    ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
    ax.set_ylim(len(kinds) - 0.5, -0.5)
    restarts = _restarts(outcome.samples)
    for t in restarts:
        ax.axvline(t, color="black", ls=":", lw=0.8)
    if restarts:
        ax.legend(
            handles=[Line2D([], [], color="black", ls=":", label="gateway restart")],
            loc="upper right",
            fontsize=8,
        )
    ax.set_title("Faults (a bar per step, until delivery resumed)", fontsize=10, loc="left")
    ax.grid(axis="x", alpha=0.3)


def _draw(ax: Axes, metric: _Metric, outcome: Outcome) -> None:
    for t in _restarts(outcome.samples):
        ax.axvline(t, color="black", ls=":", lw=0.8)
    # A run of samples per gateway process: a restart or a gap breaks the line.
    for run in _runs(outcome.samples, metric.value):
        ax.plot([t for t, _ in run], [v for _, v in run], color="tab:blue", lw=1.0)
    for trend in outcome.trends:
        if trend.bound.metric == metric.trend:
            ts = [trend.start, trend.end]
            ax.plot(
                ts,
                [trend.intercept + trend.slope * t for t in ts],
                color="tab:green" if trend.ok else "tab:red",
                lw=2.0,
                label=(
                    f"trend: {trend.rise:+.2f} {trend.bound.unit} over {trend.window:.0f} s "
                    f"(allowed {trend.allowed_rise:.2f})"
                ),
            )
            ax.legend(loc="lower right", fontsize=8)
    ax.set_title(metric.title, fontsize=10, loc="left")
    ax.set_ylabel(metric.unit)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _restarts(samples: Sequence[Sample]) -> list[float]:
    pids = [(s.t, s.pid) for s in samples if s.pid is not None]
    return [t for (_, a), (t, b) in itertools.pairwise(pids) if a != b]


def _runs(
    samples: Sequence[Sample], value: Callable[[Sample], float | None]
) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    pid: int | None = None
    for s in samples:
        v = value(s)
        if v is None or s.pid != pid:
            if current:
                runs.append(current)
            current = []
            pid = s.pid
        if v is not None:
            current.append((s.t, v))
    if current:
        runs.append(current)
    return runs


def _markdown(outcome: Outcome, plots: list[str]) -> str:
    failures = outcome.failures()
    lines = [
        f"# Soak report: {outcome.campaign} campaign: {'FAIL' if failures else 'PASS'}",
        "",
        f"Started {outcome.started_utc}. How to run it and read this report: "
        "docs/operations.md, section *Soak*.",
        "",
    ]
    if failures:
        lines += ["## Failures", ""]
        for failure in failures:
            first, _, rest = failure.partition("\n")
            lines.append(f"- {first}")
            if rest:  # a log excerpt, kept as it was written
                lines += ["", "  ```", *(f"  {line}" for line in rest.splitlines()), "  ```"]
        lines.append("")
    lines += ["## Checks", "", "| check | result |", "|---|---|"]
    v = outcome.verdict
    if v is not None:
        lines += [
            f"| committed readings (database reads) | {v.committed} |",
            f"| delivered (distinct seqs at the subscriber) | {v.delivered}, "
            f"plus {v.duplicates} duplicate copies |",
            f"| lost | {len(v.lost)} |",
            f"| excluded: only in a damaged file, unacknowledged | {v.excluded} "
            f"({v.excluded_arrived} of them arrived anyway) |",
            f"| seqs reused with other content | {len(v.reused)} |",
            f"| devices with readings out of order | {len(v.out_of_order)} |",
        ]
    lines += [
        f"| readings dropped by the gateway | {outcome.dropped} |",
        f"| final SIGTERM exit code | {outcome.stop_code} |",
        f"| final database `PRAGMA integrity_check` | {outcome.integrity} |",
        f"| damaged files moved aside | {outcome.moved_aside} |",
    ]
    lines += [
        f"| {t.bound.metric} trend | {'ok' if t.ok else 'FAIL'}: {t.describe()} |"
        for t in outcome.trends
    ]
    lines += ["", "## Parameters", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {val} |" for k, val in outcome.parameters.items()]
    lines += _fault_tables(outcome)
    lines += _resource_table(outcome.samples)
    lines += ["## Plots", ""]
    lines += [
        "The top row is the faults: a bar per step, from the injection until delivery "
        "resumed (red edge: the step failed). Dotted lines are gateway restarts; the "
        "straight line on RSS and fds is the fitted trend over its window (green within "
        "the bound, red beyond it). Gaps are times the gateway was down.",
        "",
    ]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", "Raw data: `samples.csv` (one row per sample), `faults.csv`.", ""]
    return "\n".join(lines)


def _fault_tables(outcome: Outcome) -> list[str]:
    counts: dict[str, int] = {}
    for e in outcome.events:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    lines = ["", "## Faults", "", "| fault | steps |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in counts.items()]
    lines += [f"| unplug/replug cycles in all | {outcome.unplugs} |", ""]
    lines += ["| # | at (s) | took (s) | fault | what happened |", "|---|---|---|---|---|"]
    lines += [
        f"| {i} | {e.start:.1f} | {e.end - e.start:.1f} | {e.kind} | {_cell(e.detail)} |"
        for i, e in enumerate(outcome.events, 1)
    ]
    return [*lines, ""]


def _cell(text: str, limit: int = 300) -> str:
    """One table cell: the first line, cut to ``limit``, no column separators."""
    line = text.partition("\n")[0].replace("|", "/")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _resource_table(samples: Sequence[Sample]) -> list[str]:
    lines = ["## Resources", "", "| | min | median | max |", "|---|---|---|---|"]
    for metric in METRICS:
        values = [v for s in samples if (v := metric.value(s)) is not None]
        if values:
            lines.append(
                f"| {metric.title} ({metric.unit}) | {min(values):.1f} | "
                f"{statistics.median(values):.1f} | {max(values):.1f} |"
            )
    return [*lines, f"\n{len(samples)} samples.", ""]
