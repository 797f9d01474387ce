"""Read-only queries of the log for the dashboard, one at a time on their own thread.

History and dead letters are read on a read-only connection (``gateway.store.read_only``)
in one worker thread of their own, so that a technician's chart never delays the store's
reader, which feeds the uplinks and the live stream. At most ``MAX_PENDING`` queries
wait or run at once; beyond, a request is refused (429) rather than queued without
bound. A query counts as pending until its thread is done with it, also when the client
that asked for it went away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from gateway.store import read_only

T = TypeVar("T")

MAX_PENDING = 4


class LogQueries:
    """Runs ``fn(connection)`` on the worker thread, with a fresh read-only connection."""

    def __init__(self, data_dir: Callable[[], Path]) -> None:
        self._data_dir = data_dir
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="local-queries"
        )
        self.pending = 0
        self.refused_busy = 0

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.pending >= MAX_PENDING:
            self.refused_busy += 1
            raise web.HTTPTooManyRequests(
                text=json.dumps({"error": "too many log queries at once; retry in a moment"}),
                content_type="application/json",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        self.pending += 1
        job = self._executor.submit(self._call, self._data_dir(), fn)
        # Released when the thread is done (or the job was cancelled before it started),
        # not when the awaiting request is.
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(job)

    def _release(self) -> None:
        self.pending -= 1

    @staticmethod
    def _call(data_dir: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
        with read_only.connect(data_dir) as conn:
            return fn(conn)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
