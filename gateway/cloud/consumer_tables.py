"""The consumer's own two tables, beside the landing's ``readings``, in the same database.

- ``parked``: messages that are not telemetry, with their raw bytes and the reason,
  once each (keyed by the body's SHA-256: a redelivered hostile message is not
  parked twice).
- ``gaps``: seq holes reported per gateway: ``gateway``, ``from_seq``, ``to_seq``,
  ``reported_at``, ``resend_requests`` (how often the gateway was asked for it),
  ``closed_at`` (when the hole filled; NULL while open).

SQLite (``sqlite://PATH``) or PostgreSQL (``postgresql://…``), as the landing.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cloud.landing import LandingError

if TYPE_CHECKING:
    import psycopg

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS parked (
        digest text PRIMARY KEY,
        body {blob} NOT NULL,
        reason text NOT NULL,
        parked_at double precision NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS gaps (
        gateway text NOT NULL,
        from_seq bigint NOT NULL,
        to_seq bigint NOT NULL,
        reported_at double precision NOT NULL,
        resend_requests integer NOT NULL DEFAULT 0,
        closed_at double precision,
        PRIMARY KEY (gateway, from_seq, to_seq)
    )""",
)
_PARK = "INSERT INTO parked VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (digest) DO NOTHING"
_RECORD = (
    "INSERT INTO gaps (gateway, from_seq, to_seq, reported_at) VALUES ({p}, {p}, {p}, {p}) "
    "ON CONFLICT (gateway, from_seq, to_seq) DO UPDATE SET closed_at = NULL"
)
_RESEND = (
    "UPDATE gaps SET resend_requests = resend_requests + 1 "
    "WHERE gateway = {p} AND from_seq = {p} AND to_seq = {p}"
)
_CLOSE = (
    "UPDATE gaps SET closed_at = {p} "
    "WHERE gateway = {p} AND from_seq = {p} AND to_seq = {p} AND closed_at IS NULL"
)


def _parked_rows(messages: Sequence[tuple[bytes, str]]) -> list[tuple[str, bytes, str, float]]:
    now = time.time()
    return [(hashlib.sha256(body).hexdigest(), body, reason, now) for body, reason in messages]


class ConsumerTables(ABC):
    """The statements, once; each backend runs them in one transaction."""

    @abstractmethod
    async def _run(self, *statements: tuple[str, Sequence[Sequence[Any]]]) -> None: ...

    async def create(self) -> None:
        await self._run(*((sql, [()]) for sql in _SCHEMA))

    async def park(self, messages: Sequence[tuple[bytes, str]]) -> None:
        await self._run((_PARK, _parked_rows(messages)))

    async def record_gap(self, gateway: str, from_seq: int, to_seq: int) -> None:
        await self._run((_RECORD, [(gateway, from_seq, to_seq, time.time())]))

    async def resend_requested(self, gateway: str, from_seq: int, to_seq: int) -> None:
        await self._run((_RESEND, [(gateway, from_seq, to_seq)]))

    async def close_gap(self, gateway: str, from_seq: int, to_seq: int) -> None:
        await self._run((_CLOSE, [(time.time(), gateway, from_seq, to_seq)]))

    @abstractmethod
    async def close(self) -> None: ...


class SqliteTables(ConsumerTables):
    """Short statements on a thread: the consumer writes here rarely (hostile input, holes)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = asyncio.Lock()

    def _execute(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        db = sqlite3.connect(self._path, timeout=30)
        try:
            with db:
                for sql, params in statements:
                    db.executemany(sql.format(p="?", blob="blob"), params)
        finally:
            db.close()

    async def _run(self, *statements: tuple[str, Sequence[Sequence[Any]]]) -> None:
        async with self._lock:
            try:
                await asyncio.to_thread(self._execute, statements)
            except sqlite3.Error as err:
                raise LandingError(f"sqlite: {err}") from err

    async def close(self) -> None:
        return None  # nothing held open between statements


class PostgresTables(ConsumerTables):
    """One connection, opened again after a failure (the landing has its own pool)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _run(self, *statements: tuple[str, Sequence[Sequence[Any]]]) -> None:
        import psycopg  # noqa: PLC0415 - optional: only a PostgreSQL database needs it

        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(self._url)
                async with self._conn.transaction(), self._conn.cursor() as cursor:
                    for sql, params in statements:
                        await cursor.executemany(sql.format(p="%s", blob="bytea"), params)
            except psycopg.Error as err:
                if self._conn is not None:
                    await self._conn.close()
                self._conn = None
                raise LandingError(f"postgresql: {err}") from err

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


async def open_tables(url: str) -> ConsumerTables:
    """The consumer's tables in the database at ``url``, created where missing."""
    tables: ConsumerTables
    if url.startswith("sqlite://"):
        tables = SqliteTables(Path(url.removeprefix("sqlite://")))
    elif url.startswith(("postgresql://", "postgres://")):
        tables = PostgresTables(url)
    else:
        raise LandingError(f"database URL {url!r}: expected sqlite://PATH or postgresql://…")
    await tables.create()
    return tables
