"""What a landing database holds, read directly (not through the code under test)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

_QUERY = "SELECT seq, body FROM readings WHERE gateway = {} ORDER BY seq"


async def landed_bodies(url: str, gateway: str) -> dict[int, str]:
    """seq -> the stored body of every reading of ``gateway`` in the database at ``url``."""
    if url.startswith("sqlite://"):
        with closing(sqlite3.connect(url.removeprefix("sqlite://"))) as db:
            return dict(db.execute(_QUERY.format("?"), (gateway,)).fetchall())
    import psycopg  # noqa: PLC0415 - only the PostgreSQL tests need it

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(_QUERY.format("%s"), (gateway,))
        return {seq: body for seq, body in await cursor.fetchall()}


async def landed_in_arrival_order(url: str, gateway: str) -> list[int]:
    """The seqs of ``gateway`` in a SQLite landing in the order they landed (each
    transaction stamps its own ``received_at``; seq order within one)."""
    query = "SELECT seq FROM readings WHERE gateway = ? ORDER BY received_at, seq"
    with closing(sqlite3.connect(url.removeprefix("sqlite://"))) as db:
        return [seq for (seq,) in db.execute(query, (gateway,)).fetchall()]
