"""Deleting from the log's tail, with bounded work, counting what was not yet sent.

Every deletion reports two counts of unsent rows: against the cursors of the
consumers registered since open (that is what ``depth`` counts) and against the
cursors that hold retention (that is what ``dropped`` counts). With no cursor at
all, nothing counts as unsent.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# Stands for "no cursor": no seq is above it.
_NO_CURSOR = 2**62


@dataclass(frozen=True, slots=True)
class Floors:
    active: int | None  # lowest cursor of consumers registered since open
    holding: int | None  # lowest cursor retention must not pass


@dataclass(frozen=True, slots=True)
class Trimmed:
    rows: int = 0
    unsent_active: int = 0  # subtract from depth
    unsent_holding: int = 0  # add to dropped


def used_bytes(conn: sqlite3.Connection, page_size: int) -> int:
    """Bytes in pages that hold data; freed pages are reused, so the file does not count."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    return (int(pages) - int(free)) * page_size


def expired(
    conn: sqlite3.Connection, *, chunk: int, cutoff: float, upto: int, floors: Floors
) -> Trimmed:
    """Delete rows older than ``cutoff`` with seq <= ``upto`` among the oldest ``chunk``.

    ``ts`` grows with ``seq`` (both follow the gateway's clock), so looking only at
    the oldest rows finds every expired row over a few turns, at bounded cost.
    """
    hi, n, unsent_active, unsent_holding = conn.execute(
        "SELECT max(seq), count(*), sum(seq > ?), sum(seq > ?) FROM "
        "(SELECT seq, ts FROM readings ORDER BY seq LIMIT ?) WHERE ts < ? AND seq <= ?",
        (cursor_seq(floors.active), cursor_seq(floors.holding), chunk, cutoff, upto),
    ).fetchone()
    if not n:
        return Trimmed()
    conn.execute("DELETE FROM readings WHERE seq <= ? AND ts < ?", (hi, cutoff))
    return Trimmed(n, unsent_active, unsent_holding)


def oldest(conn: sqlite3.Connection, *, count: int, upto: int, floors: Floors) -> Trimmed:
    """Delete the oldest ``count`` rows with seq <= ``upto``."""
    hi, n, unsent_active, unsent_holding = conn.execute(
        "SELECT max(seq), count(*), sum(seq > ?), sum(seq > ?) FROM "
        "(SELECT seq FROM readings WHERE seq <= ? ORDER BY seq LIMIT ?)",
        (cursor_seq(floors.active), cursor_seq(floors.holding), upto, count),
    ).fetchone()
    if not n:
        return Trimmed()
    conn.execute("DELETE FROM readings WHERE seq <= ?", (hi,))
    return Trimmed(n, unsent_active, unsent_holding)


def cursor_seq(cursor: int | None) -> int:
    """A cursor for SQL comparisons: no cursor stands above every seq."""
    return _NO_CURSOR if cursor is None else cursor
