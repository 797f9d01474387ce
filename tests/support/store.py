"""Real stores on files in the test's directory: opened with given options, readings to
put in them, the ``store`` fixture for tests of what consumes one, and a write lock held
from outside."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.reading import Sample
from gateway.settings import StoreSettings
from gateway.store import Store


def sample(i: int, device: str = "thermo-1", ts: float | None = None) -> Sample:
    return Sample(device, "t", 20.0 + i / 10, time.time() if ts is None else ts)


@asynccontextmanager
async def opened(data_dir: Path, **options: Any) -> AsyncIterator[Store]:
    """A store on a real file; keyword options go to StoreSettings or Store.open."""
    open_keys = {"max_page_count", "startup_grace"}
    settings = StoreSettings(**{k: v for k, v in options.items() if k not in open_keys})
    store = await Store.open(
        data_dir / "readings.db", settings, **{k: v for k, v in options.items() if k in open_keys}
    )
    try:
        yield store
    finally:
        await store.close()


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Hold the database's write lock from outside, so the writer waits inside a commit."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    # durability "normal": these tests are about consumers, not power loss.
    async with opened(tmp_path, durability="normal") as store:
        yield store
