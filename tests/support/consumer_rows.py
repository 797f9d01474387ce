"""What a consumer landed, read back from its database (PostgreSQL or SQLite)."""

from __future__ import annotations

import sqlite3

import psycopg

_SEQS = "SELECT seq FROM readings WHERE gateway = {p} ORDER BY seq"


def landed_seqs(db_url: str, gateway: str) -> list[int]:
    """Every landed seq of ``gateway``, ascending, repeats included (there must be none)."""
    if db_url.startswith("sqlite://"):
        with sqlite3.connect(db_url.removeprefix("sqlite://")) as db:
            return [row[0] for row in db.execute(_SEQS.format(p="?"), (gateway,))]
    with psycopg.connect(db_url) as conn:
        return [row[0] for row in conn.execute(_SEQS.format(p="%s"), (gateway,))]
