"""Faults the store survives: a full disk, a damaged file, a kill -9."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.reading import DeadLetter, Sample, encode
from gateway.settings import StoreSettings
from gateway.store import Store, planner, writer
from tests.support.common import wait_until
from tests.support.store import fill_filesystem, opened, pages, sample, tiny_filesystem


def _values(payloads: list[bytes]) -> list[float]:
    return [json.loads(p)["value"] for p in payloads]


async def _fill_until_full(store: Store) -> int:
    """Put readings until a commit fails for lack of room; returns how many were put."""
    put = 0
    while store.health_reason is None:
        store.put_samples([sample(put + i) for i in range(200)])
        put += 200
        await asyncio.sleep(0.01)  # let the writer try; nothing to wait on, failing is the point
    assert store.health_reason == "disk full"
    return put


async def test_page_cap_full_keeps_readings_in_memory_and_recovers(tmp_path: Path) -> None:
    async with opened(tmp_path, max_page_count=100, history=0.0, startup_grace=0.0) as store:
        await store.register_consumer("mqtt")
        put = await _fill_until_full(store)
        stats = store.stats()
        assert stats.last_seq < put
        assert stats.degraded == "disk full"
        # The consumer catches up; retention frees pages and the buffer drains itself.
        await store.ack("mqtt", stats.last_seq)
        await wait_until(lambda: store.last_seq == put, message="buffered readings committed")
        await wait_until(lambda: store.health_reason is None, message="recovery")
        assert store.stats().dropped == 0
        remaining = await store.read_after(stats.last_seq, put)
        assert [r.seq for r in remaining] == list(range(stats.last_seq + 1, put + 1))


async def test_dead_letters_beyond_what_memory_holds_while_full_are_still_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "MAX_UNSAVED_DEAD_LETTERS", 10)
    async with opened(tmp_path, max_page_count=100, history=0.0, startup_grace=0.0) as store:
        await store.register_consumer("mqtt")
        await _fill_until_full(store)
        for i in range(25):
            store.put_dead_letter(DeadLetter("thermo-1", "not a reading", b"x%d" % i, 0.0))
        await store.ack("mqtt", store.last_seq)
        await wait_until(lambda: store.health_reason is None, message="recovery")
        await wait_until(lambda: store.stats().dead_letters == 25, message="all counted")
    async with opened(tmp_path) as store:
        assert store.stats().dead_letters == 25  # persisted


@pytest.mark.parametrize("overflow", ["drop_oldest", "reject_new"])
async def test_full_buffer_drops_by_policy_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overflow: str
) -> None:
    monkeypatch.setattr(writer, "MAX_UNSAVED", 1000)
    async with opened(
        tmp_path, max_page_count=pages(60), history=0.0, startup_grace=0.0, overflow=overflow
    ) as store:
        await store.register_consumer("mqtt")
        put = await _fill_until_full(store)
        committed = store.last_seq
        store.put_samples([sample(put + i) for i in range(3000)])
        put += 3000
        await wait_until(lambda: store.stats().dropped > 0, message="drops counted")
        await store.ack("mqtt", committed)
        await wait_until(
            lambda: store.last_seq + store.stats().dropped == put, message="every sample accounted"
        )
        after = _values([r.payload for r in await store.read_after(committed, put)])
        kept = sorted(after)
        assert after == kept
        if overflow == "drop_oldest":
            assert after[-1] == pytest.approx(20.0 + (put - 1) / 10)  # the newest survive
        else:
            assert after[0] == pytest.approx(20.0 + committed / 10)  # the oldest survive


async def test_real_full_filesystem_degrades_then_recovers(tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "fs") as fs:
        async with opened(fs, min_free_bytes=0) as store:
            store.put_samples([sample(i) for i in range(10)])
            await store.flush()
            filler = fill_filesystem(fs)
            store.put_samples([sample(i) for i in range(5000)])
            await wait_until(lambda: store.health_reason == "disk full", message="disk full")
            assert store.last_seq < 5010
            filler.unlink()
            await wait_until(lambda: store.last_seq == 5010, message="buffer committed")
            await wait_until(lambda: store.health_reason is None, message="recovery")
            assert store.stats().dropped == 0
        async with opened(fs) as store:
            assert [r.seq for r in await store.read_after(0, 10_000)] == list(range(1, 5011))


async def test_low_free_space_is_reported(tmp_path: Path) -> None:
    async with opened(tmp_path, min_free_bytes=2**62) as store:
        store.put_samples([sample(1)])
        await store.flush()
        assert store.health_reason is not None
        assert store.health_reason.startswith("low disk space")
        free = store.stats().free_bytes
        assert free is not None
        assert free > 0


@pytest.mark.parametrize("damage_at", [0, 4096])
async def test_damaged_file_is_moved_aside_and_seqs_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage_at: int
) -> None:
    async with opened(tmp_path) as store:
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()
    db = tmp_path / "readings.db"
    with db.open("r+b") as f:
        f.seek(damage_at)
        f.write(os.urandom(4096))
    damaged = db.read_bytes()
    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        async with opened(tmp_path) as store:
            store.put_samples([sample(0)])
            new_seq = await store.flush()
    assert new_seq > 10
    assert _moved_aside(tmp_path) == [damaged]
    assert any("damaged" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def _moved_aside(data_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in data_dir.glob("readings.db.corrupt-*")]


PROJECT_ROOT = Path(__file__).resolve().parent.parent

CRASHING_WRITER = """
import asyncio, sys
from pathlib import Path
from gateway.reading import Sample
from gateway.settings import StoreSettings
from gateway.store import Store

async def main() -> None:
    settings = StoreSettings(durability="full", max_age=0.0, history=1e10)
    store = await Store.open(Path(sys.argv[1]) / "readings.db", settings)
    i = 0
    while True:
        store.put_samples([Sample("d", "t", float(i + k), 1.7e9 + i + k) for k in range(7)])
        i += 7
        print(await store.flush(), flush=True)

asyncio.run(main())
"""


def _expected(seq: int) -> bytes:
    i = seq - 1
    return encode(seq, Sample("d", "t", float(i), 1.7e9 + i))


async def test_kill_9_loses_nothing_reported_committed(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WRITER,
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        cwd=PROJECT_ROOT,
    )
    assert proc.stdout is not None
    reported = 0
    async with asyncio.timeout(60):
        while reported < 2000:
            line = await proc.stdout.readline()
            assert line, "the writer process ended early"
            reported = int(line)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    settings = StoreSettings(max_age=0.0, history=1e10)
    store = await Store.open(tmp_path / "readings.db", settings)
    try:
        assert store.last_seq >= reported
        stored = await store.read_after(0, store.last_seq + 1)
        assert [r.seq for r in stored] == list(range(1, store.last_seq + 1))
        assert all(r.payload == _expected(r.seq) for r in stored)
        old_last = store.last_seq
        store.put_samples([sample(0)])
        assert await store.flush() == old_last + 1
    finally:
        await store.close()


DB_FILES = ("readings.db", "readings.db-wal", "readings.db-shm")


async def test_a_lost_database_does_not_restart_seqs(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        store.put_samples([sample(i) for i in range(5)])
        await store.flush()
    # A clean close settled the floor on the last seq handed out.
    assert int((tmp_path / "seq.floor").read_text()) == 5
    for name in DB_FILES:
        (tmp_path / name).unlink(missing_ok=True)
    async with opened(tmp_path) as store:
        store.put_samples([sample(0)])
        assert await store.flush() == 6


async def test_seqs_undone_by_a_power_cut_are_not_handed_out_again(tmp_path: Path) -> None:
    """With durability "normal" a power cut can undo the last commits after an uplink
    sent them. Simulated with copies of the database files taken before those commits
    (what the disk held) and the fsynced floor taken after."""
    cut = tmp_path / "after-the-cut"
    cut.mkdir()
    store = await Store.open(tmp_path / "readings.db", StoreSettings(durability="normal"))
    try:
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()
        for name in DB_FILES:
            if (tmp_path / name).exists():
                (cut / name).write_bytes((tmp_path / name).read_bytes())
        store.put_samples([sample(i) for i in range(10)])
        assert await store.flush() == 20  # 11-20 committed, and perhaps published
        (cut / "seq.floor").write_bytes((tmp_path / "seq.floor").read_bytes())
    finally:
        await store.close()
    async with opened(cut, durability="normal") as store:
        assert [r.seq for r in await store.read_after(0, 100)] == list(range(1, 11))
        store.put_samples([sample(0)])
        assert await store.flush() > 20


async def test_a_clean_close_with_durability_normal_leaves_no_gap(tmp_path: Path) -> None:
    async with opened(tmp_path, durability="normal") as store:
        store.put_samples([sample(i) for i in range(5)])
        await store.flush()
    async with opened(tmp_path, durability="normal") as store:
        store.put_samples([sample(0)])
        assert await store.flush() == 6


async def test_one_gateway_per_data_directory(tmp_path: Path) -> None:
    async with opened(tmp_path):
        with pytest.raises(StoreError, match="in use by another gateway"):
            await Store.open(tmp_path / "readings.db", StoreSettings())
    async with opened(tmp_path) as store:  # released on close
        assert store.last_seq == 0


async def test_unusable_data_directory_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(StoreError, match="cannot open the store"):
        await Store.open(tmp_path / "not-a-dir" / "readings.db", StoreSettings())


async def test_a_writer_bug_fails_callers_instead_of_hanging_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_encode(seq: int, s: Sample) -> bytes:
        raise RuntimeError("a bug")

    async with opened(tmp_path) as store:
        monkeypatch.setattr(planner, "encode", broken_encode)
        store.put_samples([sample(1)])
        with pytest.raises(StoreError, match="writer stopped"):
            await store.flush()
        assert store.health_reason is not None
        assert store.health_reason.startswith("writer stopped")
        with pytest.raises(StoreError):
            await store.register_consumer("mqtt")
    monkeypatch.undo()
    async with opened(tmp_path) as store:  # the lock was released
        store.put_samples([sample(1)])
        assert await store.flush() == 1
