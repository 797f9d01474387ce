"""The writer's SQL: what one transaction runs on the write connection, and the
measurements the writer takes between transactions.

Each function runs its statements on the connection it is given and returns what it
found; transactions (BEGIN, COMMIT, ROLLBACK) are the writer's, apart from
``adopt``, which sets up a fresh database in one transaction of its own. Deleting
from the log's tail with bounded work is in ``trim``.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from gateway.reading import DeadLetter
from gateway.settings import Durability, StoreSettings
from gateway.store import planner, schema, trim
from gateway.store.planner import LogState, Row, TransactionPlan
from gateway.store.seq_floor import MAX_FLOOR, SeqFloor

log = logging.getLogger(__name__)

INSERT_READINGS = "INSERT INTO readings (seq, ts, device, payload) VALUES (?, ?, ?, ?)"
INSERT_DEAD_LETTERS = "INSERT INTO dead_letters (ts, device, reason, raw) VALUES (?, ?, ?, ?)"
# Keeps the newest ``?`` dead letters.
KEEP_DEAD_LETTERS = "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?"
REGISTER_CURSOR = "INSERT OR IGNORE INTO cursors (name, seq) VALUES (?, 0)"
# A cursor only moves forward.
ADVANCE_CURSOR = (
    "INSERT INTO cursors (name, seq) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET seq = max(seq, excluded.seq)"
)
CARRY_CURSOR = "INSERT OR IGNORE INTO cursors (name, seq) VALUES (?, ?)"


# -- measurements ---------------------------------------------------------------


def pragma(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def highest_seq(conn: sqlite3.Connection) -> int:
    """The highest seq among the rows (0 in an empty log)."""
    return int(conn.execute("SELECT max(seq) FROM readings").fetchone()[0] or 0)


def cursors(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, seq FROM cursors"))


def count_after(conn: sqlite3.Connection, seq: int) -> int:
    (n,) = conn.execute("SELECT count(*) FROM readings WHERE seq > ?", (seq,)).fetchone()
    return int(n)


def count_between(conn: sqlite3.Connection, after: int, upto: int) -> int:
    (n,) = conn.execute(
        "SELECT count(*) FROM readings WHERE seq > ? AND seq <= ?", (after, upto)
    ).fetchone()
    return int(n)


def first_ts_after(conn: sqlite3.Connection, seq: int) -> float | None:
    """The ts of the first row after ``seq`` (None: there is none)."""
    row = conn.execute(
        "SELECT ts FROM readings WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
    ).fetchone()
    return None if row is None else float(row[0])


# -- within a transaction ---------------------------------------------------------


def register_cursor(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(REGISTER_CURSOR, (name,))


def delete_cursor(conn: sqlite3.Connection, name: str) -> None:
    """A released consumer's cursor, in a transaction of its own."""
    conn.execute("DELETE FROM cursors WHERE name = ?", (name,))


def advance_cursor(conn: sqlite3.Connection, name: str, seq: int) -> None:
    conn.execute(ADVANCE_CURSOR, (name, seq))


def insert_readings(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    conn.executemany(INSERT_READINGS, rows)


def insert_dead_letters(conn: sqlite3.Connection, letters: Iterable[DeadLetter], keep: int) -> None:
    """Insert ``letters``, then delete all but the newest ``keep`` dead letters."""
    conn.executemany(INSERT_DEAD_LETTERS, [(d.ts, d.device, d.reason, d.raw) for d in letters])
    conn.execute(KEEP_DEAD_LETTERS, (keep,))


def write_meta(conn: sqlite3.Connection, items: Sequence[tuple[str, int]]) -> None:
    conn.executemany(schema.UPSERT_META, items)


def expire(
    conn: sqlite3.Connection,
    *,
    chunk: int,
    now: float,
    history: float,
    max_age: float,
    last_seq: int,
    floors: trim.Floors,
) -> list[trim.Trimmed]:
    """Retention behind every cursor after ``history``, and the ``max_age`` bound (0: none)."""
    upto = floors.holding if floors.holding is not None else last_seq
    done = [trim.expired(conn, chunk=chunk, cutoff=now - history, upto=upto, floors=floors)]
    if max_age > 0:
        cutoff = now - max_age
        done.append(trim.expired(conn, chunk=chunk, cutoff=cutoff, upto=last_seq, floors=floors))
    return done


def make_room(
    conn: sqlite3.Connection,
    *,
    count: int,
    upto: int,
    floors: trim.Floors,
    page_size: int,
    max_bytes: int,
) -> tuple[bool, trim.Trimmed]:
    """When the pages in use reach ``max_bytes``, delete the oldest ``count`` rows with
    seq <= ``upto``; whether there is room then, and what went."""
    if trim.used_bytes(conn, page_size) < max_bytes:
        return True, trim.Trimmed()
    done = trim.oldest(conn, count=count, upto=upto, floors=floors)
    return trim.used_bytes(conn, page_size) < max_bytes, done


# -- one transaction ---------------------------------------------------------------


def run(
    conn: sqlite3.Connection,
    plan: TransactionPlan,
    log: LogState,
    settings: StoreSettings,
    floor: SeqFloor,
    *,
    maintenance: bool,
    keep_dead_letters: int,
) -> None:
    """Everything ``plan``'s transaction does, in the open transaction of ``conn``:
    cursors, retention (with ``maintenance``), the bounds, the rows, the dead letters
    and the meta table. What it did is filled into ``plan``; the writer's state is
    changed by the writer once the transaction has committed."""
    cursors = dict(log.cursors)
    for name in plan.registers:
        register_cursor(conn, name)
        cursors.setdefault(name, 0)
    for name, seq in plan.acks.items():
        if seq > cursors.get(name, 0):
            advance_cursor(conn, name, seq)
            cursors[name] = seq
    active = log.active | set(plan.registers)
    old_floor = planner.active_floor(log.cursors, log.active)
    new_floor = planner.active_floor(cursors, active)
    if active != log.active:
        if new_floor is not None:
            plan.depth_delta = count_after(conn, new_floor) - log.depth
    elif old_floor is not None and new_floor is not None and new_floor > old_floor:
        plan.depth_delta = -count_between(conn, old_floor, new_floor)

    floors = trim.Floors(new_floor, planner.holding_floor(cursors, active, log.in_grace))
    if maintenance:
        done = expire(
            conn,
            chunk=log.retention_chunk,
            now=time.time(),
            history=settings.history,
            max_age=settings.max_age,
            last_seq=log.last_seq,
            floors=floors,
        )
        for trimmed in done:
            _count(plan, trimmed)
    room = _make_room(conn, plan, log, settings, floors)
    if not room and settings.overflow == "reject_new":
        plan.rejected = True
    else:
        _insert(conn, plan, log.last_seq, floor, counted=new_floor is not None)
    if plan.dead_letters or plan.unencodable:
        insert_dead_letters(conn, plan.dead_letters + plan.unencodable, keep=keep_dead_letters)
    if plan.rejected:
        plan.dropped += len(plan.samples)
    # The floor's value is read now: inserting may have raised it.
    totals = dataclasses.replace(log.totals, reserved=floor.value)
    meta = planner.meta_changes(plan, totals, log.written, log.last_seq)
    if meta:
        write_meta(conn, meta)


def _insert(
    conn: sqlite3.Connection, plan: TransactionPlan, last_seq: int, floor: SeqFloor, counted: bool
) -> None:
    seq = planner.encode_samples(plan, last_seq)
    rows = plan.rows
    if rows:
        floor.reserve(seq)
        insert_readings(conn, rows)
        if counted:
            plan.depth_delta += len(rows)
    plan.last_seq = seq


def _make_room(
    conn: sqlite3.Connection,
    plan: TransactionPlan,
    log: LogState,
    settings: StoreSettings,
    floors: trim.Floors,
) -> bool:
    """Delete the oldest rows when over ``max_bytes``; True if there is room."""
    incoming = len(plan.samples)
    if not incoming or log.used_bound < settings.max_bytes:
        return True
    room, done = make_room(
        conn,
        count=max(incoming, 1024),
        upto=planner.room_upto(settings.overflow, log.last_seq, floors.holding),
        floors=floors,
        page_size=log.page_size,
        max_bytes=settings.max_bytes,
    )
    _count(plan, done)
    return room


def _count(plan: TransactionPlan, done: trim.Trimmed) -> None:
    plan.dropped += done.unsent_holding
    plan.depth_delta -= done.unsent_active
    plan.trimmed = plan.trimmed or done.rows > 0


# -- a run's start, a fresh database, a clean close -----------------------------------


def begin_run(
    conn: sqlite3.Connection,
    path: Path,
    meta: dict[str, int],
    floor: SeqFloor,
    *,
    durability: Durability,
    wal_lost: bool,
) -> int:
    """Begin this run on the database at ``path`` (``meta``: its meta table): returns the
    seq to count as the last handed out, so that the next one is new (see
    ``SeqFloor.base``), and marks the database with the run."""
    meta_last = _plausible_seq(meta, schema.META_LAST_SEQ)
    meta_reserved = _plausible_seq(meta, schema.META_RESERVED)
    # A meta table that held a wrong number is not taken at its word after a crash.
    wal_lost = wal_lost or meta_last is None or meta_reserved is None
    db_last = max(meta_last or 0, highest_seq(conn))
    reserved = meta_reserved or 0
    if not floor.found:
        # seq.floor is lost: the databases moved aside remember how far seqs went.
        for aside in schema.moved_aside(path):
            reserved = max(reserved, schema.highest_seq_in(aside))
    base = floor.base(db_last, reserved, meta.get(schema.META_EPOCH, 0), wal_lost)
    if base > db_last and schema.META_LAST_SEQ in meta:
        log.warning(
            "store: the last stop was not clean or %s is not the database last written "
            "(its last seq %d); new seqs continue above %d so that none is reused",
            path.name,
            db_last,
            base,
        )
    if base > 0 and schema.META_LAST_SEQ not in meta:
        # A database without a run's mark that was never this directory's first: the
        # log was emptied (a zero-length file), deleted or moved aside.
        log.error(
            "store: %s is a new, empty log although seqs up to %d were handed out before; "
            "the readings of the earlier log are not in it (new seqs continue above %d)",
            path.name,
            base,
            base,
        )
    epoch = floor.begin_run(durability, base)
    try:
        write_meta(
            conn,
            [
                (schema.META_LAST_SEQ, base),
                (schema.META_RESERVED, floor.value),
                (schema.META_EPOCH, epoch),
            ],
        )
    except sqlite3.Error as e:
        if not schema.is_disk_full(e):
            raise
        # Without its run's mark the database is not trusted after a crash: the next
        # start skips ahead instead, which is safe.
        log.warning("store: cannot mark the database with this run (%s)", e)
    return base


def _plausible_seq(meta: dict[str, int], key: str) -> int | None:
    """A seq the meta table holds (0 if none), or None when it is beyond any seq ever
    handed out.

    SQLite keeps no checksums: a flipped bit in a record reads back as another number,
    not as damage. Taken at its word, such a last seq would send seqs beyond 2^53,
    which consumers reading JSON numbers as float64 cannot tell apart.
    """
    value = meta.get(key, 0)
    if 0 <= value <= MAX_FLOOR:
        return value
    log.error(
        "store: the meta table's %s (%d) is not a seq this log handed out; ignored", key, value
    )
    return None


def adopt(
    conn: sqlite3.Connection, meta: Sequence[tuple[str, int]], cursors: dict[str, int]
) -> None:
    """Carry this run's totals and every known cursor into a fresh database."""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(schema.UPSERT_META, meta)
    conn.executemany(CARRY_CURSOR, list(cursors.items()))
    conn.execute("COMMIT")


def checkpoint_all(conn: sqlite3.Connection) -> bool:
    """A checkpoint that copies the whole WAL; True if it did (and so synced the WAL and
    the database, with durability ``normal`` too)."""
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
    return not busy and frames == copied
