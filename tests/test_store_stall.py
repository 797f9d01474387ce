"""The watchdog's question to the store: is the writer wedged (restart) or fine?"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.reading import Sample
from gateway.settings import StoreSettings
from gateway.store import Store
from gateway.store.store import STALL_AFTER
from tests.support.store import pages


async def test_a_running_writer_is_not_stalled_and_a_silent_one_is(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "readings.db", StoreSettings())
    try:
        store.put_samples([Sample("d", "n", 1, time.time())])
        await store.flush()
        assert store.stall_reason() is None
        # As seen from a moment when the writer has not come round for too long.
        later = time.monotonic() + STALL_AFTER + 5
        reason = store.stall_reason(now=later)
        assert reason is not None
        assert "has not come round its loop" in reason
    finally:
        await store.close()
    # A store closed on purpose is not a wedged one.
    assert store.stall_reason() is None


async def test_a_full_store_is_degraded_but_not_stalled(tmp_path: Path) -> None:
    settings = StoreSettings(max_bytes=64 * 1024, overflow="reject_new", max_age=0)
    store = await Store.open(tmp_path / "readings.db", settings, max_page_count=pages(16))
    try:
        await store.register_consumer("mqtt")
        for i in range(200):
            store.put_samples([Sample("d", "n", i, time.time()) for _ in range(50)])
        await store.flush()
        assert store.health_reason is not None
        assert store.stall_reason() is None
    finally:
        await store.close()


async def test_a_damaged_file_makes_reads_fail_with_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "readings.db"
    store = await Store.open(path, StoreSettings())
    try:
        store.put_samples([Sample("d", "n", i, time.time()) for i in range(5000)])
        await store.flush()
        assert len(await store.read_after(0, 10)) == 10
        # Move the log into the main file, then damage every page after the first,
        # behind the store's back.
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with path.open("r+b") as f:
            f.seek(4096)
            f.write(b"\xa5" * (path.stat().st_size - 4096))
        with pytest.raises(StoreError, match="reading the log failed"):
            await store.read_after(0, 10_000)
    finally:
        with contextlib.suppress(StoreError):
            await store.close()
