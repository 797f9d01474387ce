"""What enters the store is bounded, and what is lost on the way is counted.

Dead letters on a failing disk never hold back samples that would fit, a cursor never
passes a refused reading whose dead letter is still only in memory, a flood of dead
letters is held back like a flood of samples, and a writer that dies says so at once
instead of accepting into a queue nobody drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from drivers.serial_line.settings import SerialLineSettings
from drivers.serial_line.transport import SerialLineDriver
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.errors import StoreClosedError, StoreError
from gateway.reading import DeadLetter, Sample
from gateway.retry import Backoff
from gateway.settings import StoreSettings
from gateway.store import Store, planner
from gateway.store.ingress import (
    MAX_DEAD_LETTER_RAW,
    MAX_PENDING_DEAD_LETTERS,
    MAX_PENDING_REQUESTS,
)
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.drivers import running, wait_open
from tests.support.store import opened, sample, write_locked

BIG = 60 * 1024  # a dead letter of some 15 pages


def letter(i: int, size: int = 16) -> DeadLetter:
    return DeadLetter("thermo-1", "bad line", bytes([i % 256]) * size, 0.0)


def stored_dead_letters(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "readings.db")) as conn:
        (n,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    return int(n)


async def test_dead_letters_that_do_not_fit_never_hold_back_samples(tmp_path: Path) -> None:
    async with opened(tmp_path, max_page_count=60) as store:
        for i in range(10):
            store.put_dead_letter(letter(i, BIG))  # far more than 60 pages
        store.put_samples([sample(i) for i in range(10)])
        await wait_until(lambda: store.last_seq == 10, message="the samples committed")
        assert store.health_reason == "disk full"  # the rest of the dead letters wait
    stored = stored_dead_letters(tmp_path)
    assert stored < 10
    async with opened(tmp_path) as store:
        stats = store.stats()
        assert stats.dead_letters == 10  # every one counted
        assert stats.dead_letters_lost == 10 - stored  # those that never fitted, as lost
        assert stats.dropped == 0


async def test_an_ack_never_passes_a_dead_letter_held_only_in_memory(tmp_path: Path) -> None:
    async with opened(tmp_path, max_page_count=12, history=1e10) as store:
        await store.register_consumer("mqtt")
        store.put_samples([sample(i) for i in range(5)])
        assert await store.flush() == 5
        # An uplink refused reading 5 for good: its dead letter, then the ack past it.
        store.put_dead_letter(letter(5, BIG))
        ack = asyncio.ensure_future(store.ack("mqtt", 5))
        await wait_until(lambda: store.health_reason == "disk full", message="it cannot fit")
        await store.flush()  # the writer has come round again since
        assert not ack.done()
    with pytest.raises(StoreClosedError):
        await ack
    async with opened(tmp_path) as store:
        # The cursor stayed before the reading: the uplink sends it (and has it refused,
        # and dead-lettered) again; the lost copy is counted.
        assert await store.register_consumer("mqtt") == 0
        assert store.stats().dead_letters_lost == 1


async def test_an_ack_commits_with_the_dead_letters_put_before_it(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await store.register_consumer("mqtt")
        store.put_samples([sample(i) for i in range(5)])
        await store.flush()
        store.put_dead_letter(letter(5))
        await store.ack("mqtt", 5)
        assert store.stats().dead_letters == 1
    assert stored_dead_letters(tmp_path) == 1


async def test_a_flood_of_dead_letters_congests_the_store(tmp_path: Path) -> None:
    path = tmp_path / "readings.db"
    store = await Store.open(path, StoreSettings())
    try:
        with write_locked(path):
            for i in range(499):
                store.put_dead_letter(letter(i))
            assert not store.congested
            store.put_dead_letter(letter(499))
            # 500 bad lines weigh what 20,000 samples do: a device sending only bad
            # lines is paused like one sending too many good ones.
            assert store.congested
            waiting = asyncio.ensure_future(store.wait_for_room())
            await asyncio.sleep(0)
            assert not waiting.done()
        await asyncio.wait_for(waiting, timeout=30)
        await store.flush()
        assert store.stats().dead_letters == 500
        assert store.stats().dead_letters_lost == 0
    finally:
        await store.close()


async def test_dead_letters_and_requests_waiting_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "readings.db"
    store = await Store.open(path, StoreSettings())
    # At most as many wait for the writer as it holds itself: beyond both, some are lost.
    puts = 2 * MAX_PENDING_DEAD_LETTERS + 500
    try:
        with write_locked(path):
            for i in range(puts):
                store.put_dead_letter(letter(i))
            flushes = [asyncio.ensure_future(store.flush()) for _ in range(MAX_PENDING_REQUESTS)]
            await asyncio.sleep(0)
            with pytest.raises(StoreError, match="too many requests"):
                await store.flush()
        assert all(isinstance(r, int) for r in await asyncio.gather(*flushes))
        stats = store.stats()
        assert stats.dead_letters == puts
        assert stats.dead_letters_lost > 0
    finally:
        await store.close()
    assert stored_dead_letters(tmp_path) + stats.dead_letters_lost == puts


async def test_raw_bytes_of_a_dead_letter_are_bounded(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        store.put_dead_letter(letter(1, MAX_DEAD_LETTER_RAW * 3))
        await store.flush()
    with contextlib.closing(sqlite3.connect(tmp_path / "readings.db")) as conn:
        reason, raw = conn.execute("SELECT reason, raw FROM dead_letters").fetchone()
    assert len(raw) == MAX_DEAD_LETTER_RAW
    assert f"cut from {MAX_DEAD_LETTER_RAW * 3}" in reason


async def test_a_dead_writer_refuses_input_counts_it_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_encode(seq: int, s: Sample) -> bytes:
        raise RuntimeError("a bug")

    async with opened(tmp_path) as store:
        monkeypatch.setattr(planner, "encode", broken_encode)
        store.put_samples([sample(1)])
        reason = await asyncio.wait_for(store.wait_failed(), timeout=30)
        assert "a bug" in reason
        assert store.stall_reason() == reason  # the watchdog stops petting
        assert (store.health_reason or "").startswith("writer stopped")
        assert store.stats().dropped == 1  # the sample it died on
        store.put_samples([sample(i) for i in range(10)])
        store.put_dead_letter(letter(0))
        stats = store.stats()
        assert stats.dropped == 11  # refused and counted, not queued for nobody
        assert (stats.dead_letters, stats.dead_letters_lost) == (1, 1)
        assert not store.congested
    monkeypatch.undo()
    async with opened(tmp_path) as store:
        # What it lost before it went was written down.
        assert store.stats().dropped == 1


async def test_a_gateway_whose_store_writer_dies_ends_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_encode(seq: int, s: Sample) -> bytes:
        raise RuntimeError("a bug")

    settings = parse_config({"gateway": {"id": "gw-1", "data_dir": str(tmp_path)}}, None)
    gateway = Gateway(settings)
    running = asyncio.ensure_future(gateway.run())
    try:
        await wait_until(lambda: gateway.store is not None, message="store open")
        assert gateway.store is not None
        monkeypatch.setattr(planner, "encode", broken_encode)
        gateway.store.put_samples([sample(1)])
        # Ended at once (exit code 1 from the command line), not left running without
        # a store until the watchdog notices.
        with pytest.raises(StoreError, match="the store stopped: writer stopped"):
            await asyncio.wait_for(running, timeout=30)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, StoreError):
            await running


async def test_a_device_sending_only_bad_lines_is_paused_like_one_sending_too_many(
    tmp_path: Path,
) -> None:
    link = tmp_path / "dev" / "noisy"
    path = tmp_path / "data" / "readings.db"
    settings = SerialLineSettings(id="noisy-1", port=str(link))
    bad = 3000
    store = await Store.open(path, StoreSettings())
    try:
        async with PtyDevice("counter", link, count=0) as dev:
            driver = SerialLineDriver(
                settings, store, backoff=Backoff(0.02, 0.2, missing_poll=0.02)
            )
            async with running(driver):
                await wait_open(driver)
                with write_locked(path):
                    dev.inject(b"\x00\xffnot a reading\n" * bad)
                    await wait_until(lambda: driver.status.pauses == 1, message="a pause")
                    assert store.congested
                    # Held back: the rest waits in the device, not in memory.
                    assert driver.status.errors < bad
                await wait_until(
                    lambda: driver.status.errors == bad, timeout=60, message="every bad line"
                )
        await store.flush()
        stats = store.stats()
        assert stats.dead_letters == bad
        assert stats.dead_letters_lost == 0
    finally:
        await store.close()
