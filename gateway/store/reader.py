"""Reads of the log on their own thread and connection (WAL readers never block the writer)."""

from __future__ import annotations

import asyncio
import fnmatch
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.errors import StoreError
from gateway.globs import sqlite_glob
from gateway.reading import StoredReading
from gateway.settings import Durability
from gateway.store import schema

T = TypeVar("T")


def device_filter(device_glob: str | None) -> tuple[str, tuple[str, ...]]:
    """SQL condition and parameters for a device glob with fnmatch semantics.

    Globs of device ids run as SQLite's GLOB, in C (``gateway.globs``); only one
    that GLOB cannot express (an unclosed ``[``) goes through fnmatch itself.
    """
    if device_glob is None or device_glob == "*":
        return "", ()
    pattern = sqlite_glob(device_glob)
    if pattern is None:
        return " AND fnmatch(device, ?)", (device_glob,)
    return " AND device GLOB ?", (pattern,)


# Called (from the reader's thread) with the generation of the database a read found
# damaged and SQLite's message; the writer then moves that database aside.
DamageReport = Callable[[int, str], None]


class Reader:
    """One read connection used from one worker thread.

    ``generation`` tells which database the writer has open; when it changes (a
    damaged one was moved aside) the reader opens the new file before its next read.
    """

    def __init__(
        self,
        path: Path,
        durability: Durability,
        generation: Callable[[], int],
        report: DamageReport,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")
        self._path = path
        self._durability = durability
        self._generation = generation
        self._report = report
        self._conn: sqlite3.Connection | None = None
        self._conn_generation = 0

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_conn, fn)

    def _with_conn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        generation = self._generation()
        if self._conn is not None and self._conn_generation != generation:
            self._conn.close()
            self._conn = None
        try:
            if self._conn is None:
                self._conn_generation = generation
                self._conn = schema.connect(self._path, self._durability)
                # fnmatchcase caches its compiled patterns.
                self._conn.create_function("fnmatch", 2, fnmatch.fnmatchcase, deterministic=True)
            return fn(self._conn)
        except sqlite3.Error as exc:
            if schema.is_corruption(exc):
                self._report(self._conn_generation, str(exc))
            # The next read opens afresh: the file may have been moved aside meanwhile.
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            raise StoreError(f"reading the log failed: {exc}") from exc

    async def read_after(
        self, seq: int, limit: int, device_glob: str | None
    ) -> list[StoredReading]:
        condition, params = device_filter(device_glob)
        # The condition is one of two constant strings; the glob itself is a parameter.
        sql = (
            "SELECT seq, device, payload FROM readings "  # noqa: S608
            f"WHERE seq > ?{condition} ORDER BY seq LIMIT ?"
        )

        def query(conn: sqlite3.Connection) -> list[StoredReading]:
            return [StoredReading(*row) for row in conn.execute(sql, (seq, *params, limit))]

        return await self.call(query)

    async def read_devices_after(
        self, seq: int, limit: int, devices: Sequence[str]
    ) -> list[StoredReading]:
        marks = ",".join("?" * len(devices))
        # Only placeholders are formatted in; the ids themselves are parameters.
        sql = (
            "SELECT seq, device, payload FROM readings "  # noqa: S608
            f"WHERE seq > ? AND device IN ({marks}) ORDER BY seq LIMIT ?"
        )

        def query(conn: sqlite3.Connection) -> list[StoredReading]:
            return [StoredReading(*row) for row in conn.execute(sql, (seq, *devices, limit))]

        return await self.call(query)

    async def oldest_seq(self) -> int | None:
        def query(conn: sqlite3.Connection) -> int | None:
            (seq,) = conn.execute("SELECT min(seq) FROM readings").fetchone()
            return None if seq is None else int(seq)

        return await self.call(query)

    async def cursors(self) -> dict[str, int]:
        def query(conn: sqlite3.Connection) -> dict[str, int]:
            return {str(n): int(s) for n, s in conn.execute("SELECT name, seq FROM cursors")}

        return await self.call(query)

    async def close(self) -> None:
        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self.call(close)
        self._executor.shutdown(wait=True)
