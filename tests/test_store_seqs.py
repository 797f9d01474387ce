"""`seq` is never handed out twice, whatever happened before a start.

An unclean stop is simulated as a power cut leaves the disk: copies of the files
taken while the store runs (with `durability = "full"` every commit is already on
disk, so the copies hold all of them; with `"normal"` the database copy is taken
before the last commits). See docs/store.md, *Seqs*.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import struct
from pathlib import Path

import pytest

from gateway.store import schema
from tests.support.common import wait_until
from tests.support.store import DB_FILES, SEQ_FILES, copy, next_seq, opened, put, sample
from tests.support.store_damage import damage_page, readings_leaves


async def test_a_crash_under_full_continues_right_after_the_last_commit(tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    async with opened(tmp_path) as store:
        store.put_samples([sample(i) for i in range(10)])
        assert await store.flush() == 10
        copy(tmp_path, cut, DB_FILES + SEQ_FILES)
    # Every commit was fsynced and the database is the one that run wrote: no gap.
    assert await next_seq(cut) == 11


@pytest.mark.parametrize("then", ["normal", "full"])
async def test_an_unclean_stop_under_normal_never_reuses_seqs(tmp_path: Path, then: str) -> None:
    cut = tmp_path / "cut"
    async with opened(tmp_path, durability="normal") as store:
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()
        copy(tmp_path, cut, DB_FILES)  # what reached the disk
        store.put_samples([sample(i) for i in range(10)])
        assert await store.flush() == 20  # 11-20 handed out, perhaps delivered
        copy(tmp_path, cut, SEQ_FILES)  # fsynced before any of them was handed out
    assert await next_seq(cut, then) > 20


async def test_an_older_database_restored_after_a_clean_stop(tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    assert await put(tmp_path, 10) == 10
    copy(tmp_path, backup, ("readings.db",))
    assert await put(tmp_path, 10) == 20
    (tmp_path / "readings.db").unlink()
    copy(backup, tmp_path, ("readings.db",))
    # The floor says exactly where seqs stopped: no reuse and no gap.
    assert await next_seq(tmp_path) == 21


async def test_an_older_database_restored_after_an_unclean_stop(tmp_path: Path) -> None:
    backup, cut = tmp_path / "backup", tmp_path / "cut"
    assert await put(tmp_path, 10) == 10
    copy(tmp_path, backup, ("readings.db",))
    async with opened(tmp_path) as store:
        store.put_samples([sample(i) for i in range(10)])
        assert await store.flush() == 20
        copy(tmp_path, cut, SEQ_FILES)  # the run that ends without a clean stop
    copy(backup, cut, ("readings.db",))  # and an older database put back in its place
    assert await next_seq(cut) > 20


async def test_a_lost_floor_after_a_clean_stop(tmp_path: Path) -> None:
    assert await put(tmp_path, 10) == 10
    (tmp_path / "seq.floor").unlink()
    # The database keeps the floor's last value too.
    assert await next_seq(tmp_path) == 11


async def test_a_lost_floor_after_an_unclean_stop_under_normal(tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    async with opened(tmp_path, durability="normal") as store:
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()
        copy(tmp_path, cut, (*DB_FILES, "seq.run"))
        store.put_samples([sample(i) for i in range(10)])
        assert await store.flush() == 20
    assert not (cut / "seq.floor").exists()
    assert await next_seq(cut, "normal") > 20


async def test_a_lost_floor_and_a_database_moved_aside_at_open(tmp_path: Path) -> None:
    assert await put(tmp_path, 10) == 10
    damage_page(tmp_path / "readings.db", readings_leaves(tmp_path / "readings.db")[-1])
    (tmp_path / "seq.floor").unlink()
    # The moved database's own meta still says how far seqs went.
    assert await next_seq(tmp_path) == 11
    assert len(schema.moved_aside(tmp_path / "readings.db")) == 1


async def test_a_moved_aside_database_and_a_restart(tmp_path: Path) -> None:
    assert await put(tmp_path, 10) == 10
    damage_page(tmp_path / "readings.db", readings_leaves(tmp_path / "readings.db")[-1])
    assert await next_seq(tmp_path) == 11
    assert await next_seq(tmp_path) == 12


def frame_offsets(wal: Path) -> list[int]:
    data = wal.read_bytes()
    (page_size,) = struct.unpack(">I", data[8:12])
    size = 24 + page_size
    return list(range(32, len(data) - size + 1, size))


async def test_a_wal_that_lost_committed_transactions_never_reuses_their_seqs(
    tmp_path: Path,
) -> None:
    cut = tmp_path / "cut"
    async with opened(tmp_path) as store:
        for i in range(20):
            store.put_samples([sample(i)])
            await store.flush()
        copy(tmp_path, cut, DB_FILES + SEQ_FILES)
    # A damaged frame in the middle: SQLite recovers the WAL up to it and drops the rest.
    wal = cut / "readings.db-wal"
    offsets = frame_offsets(wal)
    with wal.open("r+b") as f:
        f.seek(offsets[len(offsets) // 2] + 24)
        f.write(b"\xa5" * 64)
    async with opened(cut) as store:
        kept = store.last_seq
        stored = [r.seq for r in await store.read_after(0, 100)]
        store.put_samples([sample(0)])
        new = await store.flush()
    assert stored == list(range(1, len(stored) + 1))
    assert len(stored) < 20, "the damage dropped commits"
    assert kept >= 20
    assert new > 20


async def test_files_created_or_renamed_are_made_durable_in_their_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    assert await put(tmp_path, 10) == 10
    assert str(tmp_path) in synced  # seq.floor and seq.run created, renamed, removed
    synced.clear()
    damage_page(tmp_path / "readings.db", readings_leaves(tmp_path / "readings.db")[-1])
    assert await next_seq(tmp_path) == 11
    assert str(tmp_path) in synced  # the damaged database moved aside


async def test_a_log_emptied_by_retention_keeps_its_last_seq_in_the_database(
    tmp_path: Path,
) -> None:
    # Commits that only append leave the meta table's last_seq to the rows; the
    # transaction that deletes them writes it, so the database alone still knows.
    async with opened(tmp_path, history=0.0, startup_grace=0.0) as store:
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()

        async def emptied() -> bool:
            return await store.read_after(0, 1) == []

        await wait_until(emptied, message="every reading expired")
    with contextlib.closing(sqlite3.connect(tmp_path / schema.DB_NAME)) as conn:
        assert schema.read_meta(conn)[schema.META_LAST_SEQ] == 10
    (tmp_path / "seq.floor").unlink()
    assert await next_seq(tmp_path) == 11
