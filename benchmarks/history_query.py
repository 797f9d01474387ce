"""What a dashboard history chart costs: ``GET /api/v1/history``'s query on a day of log.

``python -m benchmarks.history_query [--rate 10] [--devices 5] [--repeats 3]``

Builds a log holding a day of readings (``--rate`` per second in all, spread over
``--devices`` devices; the store creates the file, the rows go in by one bulk insert),
then times the history query on a read-only connection, best of ``--repeats``: the last
hour (every row read), the last day as the endpoint runs it (at most
``read_only.MAX_SCAN_ROWS`` rows, sampled), and the baseline, the same day with the row
bound lifted (every row of the window read). Prints a table and the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.reading import Sample, encode
from gateway.settings import StoreSettings
from gateway.store import Store, read_only

DAY = 86_400.0


def build_log(data_dir: Path, rate: float, devices: int, now: float) -> int:
    """A day of readings at ``rate`` per second ending at ``now``; returns the row count."""

    async def create() -> None:
        store = await Store.open(data_dir / "readings.db", StoreSettings(history=2 * DAY))
        await store.close()

    asyncio.run(create())
    rows = int(DAY * rate)
    conn = sqlite3.connect(data_dir / "readings.db")
    with conn:
        conn.executemany(
            "INSERT INTO readings (seq, ts, device, payload) VALUES (?, ?, ?, ?)",
            _rows(rows, devices, now - DAY, 1 / rate),
        )
    conn.close()
    return rows


def _rows(
    n: int, devices: int, start: float, step: float
) -> Iterator[tuple[int, float, str, bytes]]:
    for i in range(n):
        sample = Sample(f"dev-{i % devices}", "v", i % 1000 / 10, start + i * step)
        yield i + 1, sample.ts, sample.device, encode(i + 1, sample)


def best_of(
    repeats: int, data_dir: Path, query: read_only.HistoryQuery, max_rows: int
) -> dict[str, float]:
    best = float("inf")
    found = None
    for _ in range(repeats):
        with read_only.connect(data_dir) as conn:
            began = time.perf_counter()
            found = read_only.history(conn, query, max_rows=max_rows)
            best = min(best, time.perf_counter() - began)
    assert found is not None
    return {
        "ms": best * 1000,
        "rows_in_window": found.rows_in_window,
        "rows_scanned": found.rows_scanned,
        "buckets": len(found.buckets),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history_query", description=__doc__)
    parser.add_argument("--rate", type=float, default=10.0, help="readings per second in all")
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="edge-bench-history-") as tmp:
        data_dir = Path(tmp)
        rows = build_log(data_dir, args.rate, args.devices, now)
        end = now + 1
        cases = {
            "1h": (
                read_only.HistoryQuery("dev-0", "v", end - 3600, end, 300),
                read_only.MAX_SCAN_ROWS,
            ),
            "1d": (
                read_only.HistoryQuery("dev-0", "v", end - DAY, end, 300),
                read_only.MAX_SCAN_ROWS,
            ),
            "1d, every row (baseline)": (
                read_only.HistoryQuery("dev-0", "v", end - DAY, end, 300),
                rows + 1,
            ),
        }
        results = {
            name: best_of(args.repeats, data_dir, q, bound) for name, (q, bound) in cases.items()
        }
    baseline = results["1d, every row (baseline)"]["ms"]
    print(
        f"history query, a day of {rows:,} readings over {args.devices} devices, "
        f"best of {args.repeats}"
    )
    print(f"{'window':<26} {'ms':>9} {'rows read':>11} {'of rows':>10} {'vs baseline':>12}")
    for name, r in results.items():
        print(
            f"{name:<26} {r['ms']:>9.1f} {r['rows_scanned']:>11,} {r['rows_in_window']:>10,} "
            f"{r['ms'] / baseline:>11.2f}x"
        )
    print(json.dumps({"rows": rows, "results": results}, indent=2))


if __name__ == "__main__":
    main()
