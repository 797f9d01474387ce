"""A damaged page anywhere in readings.db, as an SD card produces it, in real files.

Whichever part reads the damaged page first (opening, the background integrity check,
a commit, retention, a registration, a read for an uplink) the store moves the file
aside, keeps it, starts a fresh log at once and says so; seqs go on above every seq
handed out, and delivery resumes without a restart.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sqlite3
import struct
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.store import Store, check, schema, writer
from tests.support.cli import queue
from tests.support.common import wait_until
from tests.support.store import opened, sample
from tests.support.store_damage import (
    COUNT,
    PAGE,
    damage_page,
    damage_the_middle,
    fill,
    readings_leaves,
)


def moved_aside(data_dir: Path) -> list[Path]:
    return schema.moved_aside(data_dir / "readings.db")


async def assert_fresh_log_goes_on(store: Store, above: int) -> None:
    """The store took up a fresh log: new readings commit above ``above`` and read back."""
    await wait_until(lambda: store.stats().moved_aside == 1, message="moved aside")
    store.put_samples([sample(i) for i in range(3)])
    last = await store.flush()
    assert last == above + 3
    assert [r.seq for r in await store.read_after(0, 100)] == [above + 1, above + 2, above + 3]
    reason = store.health_reason
    assert reason is not None
    assert "moved aside" in reason
    stats = store.stats()
    assert stats.moved_aside_at is not None
    assert stats.moved_aside_reason


async def test_damage_in_the_middle_is_found_by_the_check_after_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count = 4 * writer.RETENTION_CHUNK
    await fill(tmp_path, count)
    db = tmp_path / "readings.db"
    leaves = readings_leaves(db)
    # Beyond the rows retention looks at, before those opening reads: only the check
    # reads this page.
    pageno = leaves[-len(leaves) // 4]
    damage_page(db, pageno)
    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        async with opened(tmp_path) as store:
            await assert_fresh_log_goes_on(store, count)
            assert "integrity check" in (store.stats().moved_aside_reason or "")
    # Kept with the damage in it, for inspection.
    [aside] = moved_aside(tmp_path)
    with aside.open("rb") as f:
        f.seek((pageno - 1) * PAGE)
        assert f.read(PAGE) == b"\xa5" * PAGE
    lines = [r.getMessage() for r in caplog.records if "moved it aside" in r.getMessage()]
    assert len(lines) == 1
    # The fresh log is a sound database that the next start takes up as it is.
    async with opened(tmp_path) as store:
        assert store.last_seq == count + 3
        assert store.stats().moved_aside == 0


async def test_an_undamaged_log_passes_the_check(tmp_path: Path) -> None:
    await fill(tmp_path)
    async with opened(tmp_path) as store:
        await wait_until(lambda: store.stats().integrity_checks == 1, message="check done")
        assert store.stats().moved_aside == 0
        assert store.health_reason is None


async def test_damage_found_by_a_read_back_moves_the_log_aside(tmp_path: Path) -> None:
    await fill(tmp_path)
    async with opened(tmp_path) as store:
        await store.register_consumer("mqtt")
        await wait_until(lambda: store.stats().integrity_checks == 1, message="check done")
        # Damaged behind the running store's back, where only a read-back goes.
        damage_the_middle(tmp_path)
        with pytest.raises(StoreError, match="reading the log failed"):
            await store.read_after(0, COUNT)
        await assert_fresh_log_goes_on(store, COUNT)
        # The uplink's cursor was carried over: it goes on from where it was.
        assert await store.register_consumer("mqtt") == 0
        assert store.stats().depth == 3
        await store.ack("mqtt", COUNT + 3)
        assert store.stats().depth == 0
        # The unsent readings left in the moved file count as dropped.
        assert store.stats().dropped == COUNT


async def test_damage_found_by_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with opened(tmp_path, history=1e10) as store:
        await store.register_consumer("mqtt")
        store.put_samples([sample(i) for i in range(COUNT)])
        await store.ack("mqtt", await store.flush())
    damage_the_middle(tmp_path)
    # The check gives up at once here, so that retention is what reads the page.
    monkeypatch.setattr(check, "TIME_LIMIT", 0.0)
    async with opened(tmp_path, history=0.0, startup_grace=0.0) as store:
        await assert_fresh_log_goes_on(store, COUNT)
        # Everything in the moved file had been sent: nothing counts as dropped.
        assert store.stats().dropped == 0
        assert await store.register_consumer("mqtt") == COUNT


async def test_damage_found_when_an_uplink_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(tmp_path)
    damage_the_middle(tmp_path)
    monkeypatch.setattr(check, "TIME_LIMIT", 0.0)
    async with opened(tmp_path) as store:
        # Registering counts what the new consumer has not had: it reads the damage.
        assert await store.register_consumer("mqtt") == 0
        await assert_fresh_log_goes_on(store, COUNT)
        assert store.stats().depth == 3


async def test_damage_found_by_a_commit_does_not_lose_the_readings_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(tmp_path)
    db = tmp_path / "readings.db"
    # Retention has freed pages: the next commits take their pages from the freelist.
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DELETE FROM readings WHERE seq <= 4000")
    with db.open("rb") as f:
        f.seek(32)
        (trunk,) = struct.unpack(">I", f.read(4))
    assert trunk
    damage_page(db, trunk)
    monkeypatch.setattr(check, "TIME_LIMIT", 0.0)
    async with opened(tmp_path) as store:
        batch = [sample(i) for i in range(2000)]
        store.put_samples(batch)
        # The commit that met the damage is made again in the fresh log, whole.
        assert await store.flush() == COUNT + len(batch)
        assert store.stats().moved_aside == 1
        stored = await store.read_after(0, 10_000)
        assert [r.seq for r in stored] == list(range(COUNT + 1, COUNT + len(batch) + 1))
        assert store.stats().dropped == 0


async def test_a_damaged_cursor_page_is_found_at_open(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await store.register_consumer("mqtt")
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()
    db = tmp_path / "readings.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'cursors'"
        ).fetchone()
    damage_page(db, int(root))
    async with opened(tmp_path) as store:
        assert store.stats().moved_aside == 1
        assert store.health_reason is not None
        # The fresh log continues above every seq handed out; the uplink starts over.
        assert await store.register_consumer("mqtt") == 0
        store.put_samples([sample(0)])
        assert await store.flush() > 10
    assert len(moved_aside(tmp_path)) == 1


WAL_HEADER, FRAME_HEADER = 32, 24


def wal_frames_of(wal: Path, pageno: int) -> list[int]:
    """Byte offsets of the frames in ``wal`` that hold page ``pageno``."""
    data = wal.read_bytes()
    (page_size,) = struct.unpack(">I", data[8:12])
    size = FRAME_HEADER + page_size
    offsets = []
    for offset in range(WAL_HEADER, len(data) - size + 1, size):
        (page,) = struct.unpack(">I", data[offset : offset + 4])
        if page == pageno:
            offsets.append(offset)
    return offsets


async def test_a_damaged_frame_in_the_wal_of_a_running_store(tmp_path: Path) -> None:
    db, wal = tmp_path / "readings.db", tmp_path / "readings.db-wal"
    async with opened(tmp_path) as store:
        await wait_until(lambda: store.stats().integrity_checks == 1, message="check done")
        store.put_samples([sample(i) for i in range(COUNT)])
        assert await store.flush() == COUNT
        leaves = readings_leaves(db)  # read through the WAL: the pages as they are now
        frames = wal_frames_of(wal, leaves[len(leaves) // 2])
        assert frames, "the page is in the WAL"
        with wal.open("r+b") as f:
            f.seek(frames[-1] + FRAME_HEADER)
            f.write(b"\xa5" * PAGE)
        with pytest.raises(StoreError):
            await store.read_after(0, COUNT)
        await assert_fresh_log_goes_on(store, COUNT)


async def test_a_move_that_fails_is_tried_again_and_the_damaged_file_never_taken_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(tmp_path)
    damage_the_middle(tmp_path)
    monkeypatch.setattr(check, "TIME_LIMIT", 0.0)
    real_move = schema.move_aside
    calls: list[Path] = []

    def failing_once(path: Path) -> Path:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        return real_move(path)

    monkeypatch.setattr(schema, "move_aside", failing_once)
    async with opened(tmp_path) as store:
        await store.register_consumer("mqtt")
        await assert_fresh_log_goes_on(store, COUNT)
    assert len(calls) == 2
    assert len(moved_aside(tmp_path)) == 1


async def test_the_check_runs_again_and_finds_damage_done_while_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 4 * writer.RETENTION_CHUNK
    await fill(tmp_path, count)
    monkeypatch.setattr(check, "INTERVAL", 0.05)
    async with opened(tmp_path) as store:
        await wait_until(lambda: store.stats().integrity_checks >= 2, message="checks repeat")
        assert store.stats().moved_aside == 0
        db = tmp_path / "readings.db"
        leaves = readings_leaves(db)
        damage_page(db, leaves[-len(leaves) // 4])  # where only the check reads
        await assert_fresh_log_goes_on(store, count)
        assert "integrity check" in (store.stats().moved_aside_reason or "")


async def test_the_queue_command_lists_databases_moved_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await fill(tmp_path, 10)
    damage_page(tmp_path / "readings.db", readings_leaves(tmp_path / "readings.db")[-1])
    async with opened(tmp_path) as store:
        assert store.stats().moved_aside == 1
    [aside] = moved_aside(tmp_path)
    assert queue("stats", "--data-dir", str(tmp_path)) == 0
    assert f"moved aside    {aside.name}" in capsys.readouterr().out
    assert queue("stats", "--data-dir", str(tmp_path), "--json") == 0
    assert json.loads(capsys.readouterr().out)["moved_aside"] == [aside.name]
