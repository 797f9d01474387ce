"""Read-only queries of the log for people looking at it: a sensor's history in buckets,
and the dead letters with their raw bytes.

They run on a connection opened read-only (``mode=ro``): whatever a request asks, it
cannot write to the log, and a WAL reader never blocks the writer. Each query's cost is
bounded: in rows read (``MAX_SCAN_ROWS``) and in SQLite steps (``MAX_STEPS``), so a
request for a day of a busy gateway's log on a Raspberry Pi answers in a bounded time
or is cut off with a clear error.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StoreError
from gateway.store import schema

# Rows of the log one history query reads at most. A window holding more is sampled:
# evenly spaced runs of consecutive rows adding up to this many.
MAX_SCAN_ROWS = 200_000
# SQLite virtual machine steps one query may take before it is interrupted (checked
# every PROGRESS_EVERY steps): a backstop about 15 times what MAX_SCAN_ROWS rows cost
# (some 16 steps a row).
MAX_STEPS = 50_000_000
PROGRESS_EVERY = 100_000
# The boundary search looks this much earlier than asked: readings are committed in
# seq order, and their ``ts`` (when read) may be a little out of that order.
TS_SLACK = 10.0


class QueryTooCostly(StoreError):
    """A query stopped at its step bound."""


@dataclass(frozen=True, slots=True)
class Bucket:
    t: float  # the bucket's start, epoch seconds
    min: float
    max: float
    mean: float
    count: int


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    device: str
    sensor: str
    start: float  # epoch seconds
    end: float
    points: int  # buckets between start and end


@dataclass(frozen=True, slots=True)
class History:
    start: float
    end: float
    width: float  # seconds per bucket
    buckets: list[Bucket]  # only buckets with numeric readings, ascending
    rows_in_window: int  # log rows (all devices) between the window's bounds
    rows_scanned: int
    sampled: bool  # the window held more than MAX_SCAN_ROWS rows: runs of them were read


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: int
    ts: float
    device: str
    reason: str
    raw: bytes


@contextlib.contextmanager
def connect(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the log in ``data_dir``; SQLite errors become StoreError."""
    path = data_dir / schema.DB_NAME
    if not path.is_file():
        raise StoreError(f"no store at {path}")
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
        yield conn
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise QueryTooCostly("the query was stopped at its cost bound") from exc
        raise StoreError(f"{path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from exc
    finally:
        conn.close()


def dead_letters(
    conn: sqlite3.Connection, limit: int, *, device: str | None = None, before: int | None = None
) -> list[DeadLetterRow]:
    """The newest ``limit`` dead letters (of ``device``, with id < ``before``), oldest first."""
    sql = "SELECT id, ts, device, reason, raw FROM dead_letters WHERE id < ?"
    params: list[object] = [before if before is not None else 2**63 - 1]
    if device is not None:
        sql += " AND device = ?"
        params.append(device)
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
    return [DeadLetterRow(i, ts, d, r, bytes(raw)) for i, ts, d, r, raw in reversed(rows)]


def printable(raw: bytes) -> str:
    """Printable ASCII as is, everything else as Python-style escapes (\\xff, \\n)."""
    return repr(raw)[2:-1]


def history(
    conn: sqlite3.Connection, query: HistoryQuery, max_rows: int = MAX_SCAN_ROWS
) -> History:
    """The sensor's readings between ``start`` and ``end`` in ``points`` time buckets,
    each with the min, max, mean and count of its numeric values (booleans count as 0/1).
    """
    start, end, points = query.start, query.end, query.points
    width = (end - start) / points
    steps = 0

    def progress() -> int:
        nonlocal steps
        steps += PROGRESS_EVERY
        return 1 if steps > MAX_STEPS else 0

    conn.set_progress_handler(progress, PROGRESS_EVERY)
    try:
        conn.execute("BEGIN")  # one snapshot for the bounds and the scan
        try:
            low, high = _seq_range(conn, start - TS_SLACK, end)
            buckets: list[Bucket] = []
            total = 0 if low is None or high is None else high - low + 1
            runs, take = _sampling(total, points, max_rows)
            if total:
                assert low is not None
                step = total / runs
                rows = conn.execute(
                    _BUCKETS_SQL,
                    {
                        "runs": runs,
                        "low": low,
                        "step": step,
                        "take": take,
                        "device": query.device,
                        "sensor": query.sensor,
                        "start": start,
                        "end": end,
                        "width": width,
                        "points": points,
                    },
                ).fetchall()
                buckets = [
                    Bucket(start + index * width, float(lo), float(hi), float(mean), int(n))
                    for index, lo, hi, mean, n in rows
                ]
        finally:
            conn.execute("COMMIT")
    finally:
        conn.set_progress_handler(None, 0)
    return History(
        start, end, width, buckets, total, min(total, runs * take), sampled=runs * take < total
    )


def _sampling(total: int, points: int, max_rows: int) -> tuple[int, int]:
    """(runs, rows per run): one run of everything when it fits, else ``points`` runs
    (at least one per bucket on average) adding up to at most ``max_rows``."""
    if total <= max_rows:
        return 1, max(total, 1)
    runs = max(1, min(points, max_rows))
    return runs, max(1, max_rows // runs)


def _seq_range(conn: sqlite3.Connection, start: float, end: float) -> tuple[int | None, int | None]:
    """The seqs bounding the rows read between ``start`` and ``end``: a binary search on
    the primary key (``ts`` has no index), about 2 * log2(rows) point lookups."""
    # Two queries: SQLite reads min() or max() of the key from one end of the b-tree,
    # but both in one query by a scan of the whole table.
    (first,) = conn.execute("SELECT min(seq) FROM readings").fetchone()
    (last,) = conn.execute("SELECT max(seq) FROM readings").fetchone()
    if first is None:
        return None, None
    low = _first_seq_at(conn, first, last, start)
    high = _first_seq_at(conn, first, last, end)
    # _first_seq_at gives the first row at or after ``end``; the one before it ends the window.
    high = last if high is None else high - 1
    if low is None or high < low:
        return None, None
    return low, high


def _first_seq_at(conn: sqlite3.Connection, first: int, last: int, ts: float) -> int | None:
    """The smallest seq whose row (or the next row after it) was read at ``ts`` or later."""
    lo, hi = first, last + 1
    found: int | None = None
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            "SELECT seq, ts FROM readings WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
        ).fetchone()
        if row is None:
            hi = mid
        elif row[1] >= ts:
            found, hi = row[0], mid
        else:
            lo = row[0] + 1
    return found


# Runs of consecutive seqs (one when nothing is sampled) walked on the primary key, the
# device and the window checked on each row, then the sensor and the value's type in
# the JSON; grouped by time bucket. CROSS JOIN keeps the runs as the outer loop, and the
# unary + keeps SQLite from building an automatic index on device or ts (a full scan).
_BUCKETS_SQL = """
WITH RECURSIVE runs(i) AS (
    SELECT 0 UNION ALL SELECT i + 1 FROM runs WHERE i + 1 < :runs
),
picked AS (
    SELECT r.ts AS ts, CAST(r.payload AS TEXT) AS p
    FROM runs CROSS JOIN readings AS r
    WHERE r.seq >= :low + CAST(runs.i * :step AS INTEGER)
      AND r.seq < :low + CAST(runs.i * :step AS INTEGER) + :take
      AND +r.device = :device AND +r.ts >= :start AND +r.ts < :end
)
SELECT min(CAST((ts - :start) / :width AS INTEGER), :points - 1) AS bucket,
       min(json_extract(p, '$.value')), max(json_extract(p, '$.value')),
       avg(json_extract(p, '$.value')), count(*)
FROM picked
WHERE json_extract(p, '$.sensor') = :sensor
  AND json_type(p, '$.value') IN ('integer', 'real', 'true', 'false')
GROUP BY bucket
ORDER BY bucket
"""
