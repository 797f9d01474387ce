"""The store against damaged small files and awkward data directories, as a worn SD
card or a careless restore leaves them: a clear error or a safe continuation, never a
crash at start, a dead writer or a reused seq."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.store import schema
from tests.support.common import wait_until
from tests.support.store import (
    DB_FILES,
    SEQ_FILES,
    copy,
    fill_filesystem,
    next_seq,
    opened,
    put,
    sample,
    tiny_filesystem,
)
from tests.support.store_damage import damage_the_middle, fill


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe\x00\x9c garbage",  # bytes an SD card returns for a damaged block
        b"99999999999999999999999\n",  # beyond SQLite's integers
        b"9223372036854700000\n",  # in range, but the next block overflows it
        b"1_000\n",  # int() reads this; nothing the store writes looks like it
    ],
)
async def test_a_damaged_floor_is_read_as_lost(tmp_path: Path, content: bytes) -> None:
    assert await put(tmp_path, 5) == 5
    (tmp_path / "seq.floor").write_bytes(content)
    # Read as lost, the database's copy of the floor still says where seqs stopped.
    assert await next_seq(tmp_path) == 6
    assert await next_seq(tmp_path) == 7


@pytest.mark.parametrize("how", ["emptied", "deleted"])
async def test_a_log_emptied_or_deleted_under_the_floor_is_said_and_no_seq_reused(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert await put(tmp_path, 5) == 5
    db = tmp_path / "readings.db"
    if how == "emptied":
        db.write_bytes(b"")  # what a file system check can leave of a file
    else:
        db.unlink()
    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        assert await next_seq(tmp_path) == 6
    assert "readings.db is a new, empty log although seqs up to 5" in caplog.text


async def test_a_fresh_data_directory_says_nothing_of_a_lost_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        assert await next_seq(tmp_path) == 1
        assert await next_seq(tmp_path) == 2
    assert "empty log" not in caplog.text


def _open_files(under: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(str(under)):
                found.append(target)
    return found


async def test_a_fresh_log_that_cannot_start_on_a_full_disk_leaks_no_descriptors(
    tmp_path: Path,
) -> None:
    # Damage on a card that is also full: every attempt at a fresh log fails until
    # space returns, and each must leave nothing open behind it.
    with tiny_filesystem(tmp_path / "fs") as fs:
        await fill(fs, 2000, min_free_bytes=0)
        async with opened(fs, min_free_bytes=0) as store:
            await wait_until(lambda: store.stats().integrity_checks == 1, message="check done")
            filler = fill_filesystem(fs)
            damage_the_middle(fs)
            with pytest.raises(StoreError, match="reading the log failed"):
                await store.read_after(0, 2000)
            await wait_until(
                lambda: "cannot start a fresh one" in (store.health_reason or ""),
                message="a fresh log refused by the full disk",
            )
            first = len(_open_files(fs))
            writer = store._writer
            real_opener = writer._opener
            attempts = 0

            def counted() -> sqlite3.Connection:
                nonlocal attempts
                attempts += 1
                return real_opener()

            writer._opener = counted
            # Several attempts later (they back off up to 2 s apart) ...
            await wait_until(lambda: attempts >= 4, timeout=60, message="more attempts")
            # ... no more files are open than after the first one.
            assert len(_open_files(fs)) <= first, _open_files(fs)
            filler.unlink()
            store.put_samples([sample(0)])
            assert await store.flush() > 2000


@pytest.mark.parametrize("how", ["restored over", "removed"])
async def test_a_log_replaced_while_open_is_noticed_and_writing_goes_on_in_a_kept_file(
    tmp_path: Path, how: str
) -> None:
    assert await put(tmp_path, 10) == 10
    db = tmp_path / "readings.db"
    backup = tmp_path / "backup.db"
    backup.write_bytes(db.read_bytes())
    async with opened(tmp_path) as store:
        store.put_samples([sample(i) for i in range(10)])
        assert await store.flush() == 20
        if how == "removed":
            db.unlink()
        else:
            backup.replace(db)  # an older copy restored under the running gateway
        # Commits would go into a file nobody will open again: noticed within upkeep.
        await wait_until(
            lambda: "replaced or removed while open" in (store.health_reason or ""),
            message="the replacement noticed",
        )
        store.put_samples([sample(0)])
        after = await store.flush()
        assert after == 21
    # What was committed after the notice is in the file a start opens.
    async with opened(tmp_path) as store:
        assert [r.seq for r in await store.read_after(0, 100)] == [21]
        store.put_samples([sample(0)])
        assert await store.flush() == 22
    if how == "restored over":
        assert len(schema.moved_aside(db)) == 1  # the restored copy is kept, not lost


@pytest.mark.parametrize("key", ["last_seq", "seq_reserved"])
async def test_a_flipped_bit_in_the_meta_table_sends_no_seq_beyond_2_53(
    tmp_path: Path, key: str
) -> None:
    assert await put(tmp_path, 5) == 5
    conn = sqlite3.connect(tmp_path / "readings.db")
    # Bit 60 of the value flipped on the card: no checksum catches it.
    conn.execute("UPDATE meta SET value = value | (1 << 60) WHERE key = ?", (key,))
    conn.commit()
    conn.close()
    assert await next_seq(tmp_path) == 6


async def test_a_flipped_meta_seq_after_a_crash_under_full_reuses_no_seq(tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    async with opened(tmp_path) as store:
        store.put_samples([sample(i) for i in range(10)])
        assert await store.flush() == 10
        copy(tmp_path, cut, DB_FILES + SEQ_FILES)  # the disk as a power cut leaves it
    conn = sqlite3.connect(cut / "readings.db")
    # Every row delivered and deleted by retention; then a bit flips in last_seq.
    conn.execute("DELETE FROM readings")
    conn.execute("UPDATE meta SET value = value | (1 << 60) WHERE key = 'last_seq'")
    conn.commit()
    conn.close()
    assert await next_seq(cut) > 10


@pytest.mark.parametrize(
    "content",
    [
        b"9" * 5000 + b" full\n",  # more digits than int() takes
        b"\x00" * (1 << 20),  # a megabyte of zeros where a line was
        b"123 full\n" + b"7" * 100,  # the right line, then garbage
    ],
)
async def test_a_damaged_run_file_is_an_unclean_stop_not_a_crash(
    tmp_path: Path, content: bytes
) -> None:
    assert await put(tmp_path, 5) == 5
    (tmp_path / "seq.run").write_bytes(content)
    # An unclean stop of an unknown run: above the floor, which a clean stop left at 5.
    assert await next_seq(tmp_path) == 6
