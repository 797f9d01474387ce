"""Operator functions on a data directory, for the ``queue`` commands.

They open the database with their own connection and write only in short
transactions (WAL, busy timeout), so stats, dead letters and purges work while
the gateway runs. Replay moves a cursor the running uplink keeps in memory, so
it needs the gateway stopped.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StoreError
from gateway.store import read_only, schema, trim
from gateway.store.lock import DataDirLock, held_by_other
from gateway.store.read_only import DeadLetterRow


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    name: str
    acked_seq: int
    depth: int  # stored readings after the cursor
    oldest_unsent_age: float | None  # seconds since the oldest of those was read


@dataclass(frozen=True, slots=True)
class QueueStats:
    path: str
    running: bool  # a gateway holds the data directory
    last_seq: int
    stored: int
    first_seq: int | None
    bytes: int  # database and WAL files
    dropped: int
    dead_letters_total: int
    dead_letters_stored: int
    consumers: list[ConsumerStats]
    dead_letters_lost: int = 0  # counted, their raw bytes lost
    moved_aside: tuple[str, ...] = ()  # damaged databases kept beside the log


@dataclass(frozen=True, slots=True)
class ReplayResult:
    consumer: str
    old_seq: int
    new_seq: int
    resent: int  # stored readings that will be sent again
    first_stored: int | None  # the oldest seq still stored


@contextmanager
def _connect(data_dir: Path) -> Iterator[sqlite3.Connection]:
    path = data_dir / schema.DB_NAME
    if not path.is_file():
        raise StoreError(f"no store at {path}")
    try:
        conn = schema.connect(path, "full")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {path}: {e}") from e
    try:
        yield conn
    except sqlite3.Error as e:
        raise StoreError(f"{path}: {e}") from e
    finally:
        conn.close()


@contextmanager
def _gateway_stopped(data_dir: Path) -> Iterator[None]:
    """Hold the data directory, so no gateway starts while a cursor is moved."""
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except StoreError:
        raise StoreError(
            "the gateway is running; stop it, replay, then start it again "
            "(the running uplink would overwrite the moved cursor)"
        ) from None
    try:
        yield
    finally:
        lock.release()


def queue_stats(data_dir: Path, now: float | None = None) -> QueueStats:
    now = time.time() if now is None else now
    path = data_dir / schema.DB_NAME
    with _connect(data_dir) as conn:
        conn.execute("BEGIN")  # one consistent snapshot
        meta = schema.read_meta(conn)
        first, last_row, stored = conn.execute(
            "SELECT min(seq), max(seq), count(*) FROM readings"
        ).fetchone()
        consumers = []
        for name, seq in conn.execute("SELECT name, seq FROM cursors ORDER BY name").fetchall():
            depth, oldest = conn.execute(
                "SELECT count(*), min(ts) FROM readings WHERE seq > ?", (seq,)
            ).fetchone()
            age = None if oldest is None else max(0.0, now - oldest)
            consumers.append(ConsumerStats(name, seq, depth, age))
        (dead_stored,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        conn.execute("COMMIT")
    wal = path.with_name(schema.DB_NAME + "-wal")
    size = sum(p.stat().st_size for p in (path, wal) if p.exists())
    return QueueStats(
        path=str(path),
        running=held_by_other(data_dir),
        last_seq=max(meta.get(schema.META_LAST_SEQ, 0), last_row or 0),
        stored=stored,
        first_seq=first,
        bytes=size,
        dropped=meta.get(schema.META_DROPPED, 0),
        dead_letters_total=meta.get(schema.META_DEAD_LETTERS, 0),
        dead_letters_stored=dead_stored,
        consumers=consumers,
        dead_letters_lost=meta.get(schema.META_DEAD_LETTERS_LOST, 0),
        moved_aside=tuple(p.name for p in schema.moved_aside(path)),
    )


def dead_letters(data_dir: Path, limit: int) -> list[DeadLetterRow]:
    """The newest ``limit`` dead letters, oldest first."""
    with _connect(data_dir) as conn:
        return read_only.dead_letters(conn, limit)


def replay(data_dir: Path, consumer: str, from_seq: int) -> ReplayResult:
    """Move ``consumer``'s cursor back so readings from ``from_seq`` on are sent again."""
    if from_seq < 1:
        raise StoreError("--from-seq must be 1 or more")
    with _connect(data_dir) as conn, _gateway_stopped(data_dir):
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT seq FROM cursors WHERE name = ?", (consumer,)).fetchone()
        if row is None:
            names = [n for (n,) in conn.execute("SELECT name FROM cursors ORDER BY name")]
            conn.execute("ROLLBACK")
            known = ", ".join(names) or "none"
            raise StoreError(f"no consumer named {consumer!r} (known: {known})")
        old = int(row[0])
        new = from_seq - 1
        if new >= old:
            conn.execute("ROLLBACK")
            raise StoreError(
                f"{consumer} has acknowledged up to {old} only; replay moves a cursor back"
            )
        resent, first = conn.execute(
            "SELECT count(*), min(seq) FROM readings WHERE seq > ? AND seq <= ?", (new, old)
        ).fetchone()
        conn.execute("UPDATE cursors SET seq = ? WHERE name = ?", (new, consumer))
        conn.execute("COMMIT")
    return ReplayResult(consumer, old, new, resent, first)


def count_readings_before(data_dir: Path, seq: int) -> tuple[int, int]:
    """(readings with seq < ``seq``, of which some consumer has not acknowledged)."""
    with _connect(data_dir) as conn:
        (floor,) = conn.execute("SELECT min(seq) FROM cursors").fetchone()
        total, unsent = conn.execute(
            "SELECT count(*), coalesce(sum(seq > ?), 0) FROM readings WHERE seq < ?",
            (trim.cursor_seq(floor), seq),
        ).fetchone()
    return int(total), int(unsent)


def purge_readings_before(data_dir: Path, seq: int) -> int:
    with _connect(data_dir) as conn:
        conn.execute("BEGIN IMMEDIATE")
        # Commits that only append leave the meta table's last_seq behind the rows (a
        # start takes the higher of the two); deleting the newest rows must not lose it.
        (top,) = conn.execute("SELECT max(seq) FROM readings").fetchone()
        last = max(schema.read_meta(conn).get(schema.META_LAST_SEQ, 0), top or 0)
        conn.execute(schema.UPSERT_META, (schema.META_LAST_SEQ, last))
        deleted = conn.execute("DELETE FROM readings WHERE seq < ?", (seq,)).rowcount
        conn.execute("COMMIT")
    return int(deleted)


def purge_dead_letters(data_dir: Path) -> int:
    with _connect(data_dir) as conn:
        conn.execute("BEGIN IMMEDIATE")
        deleted = conn.execute("DELETE FROM dead_letters").rowcount
        conn.execute("COMMIT")
    return int(deleted)


def count_dead_letters(data_dir: Path) -> int:
    with _connect(data_dir) as conn:
        (n,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    return int(n)
