"""Backpressure: a store that cannot keep up pauses the serial port instead of dropping.

A real store, a real pseudo-terminal and the real driver. The simulated device waits
when the pty's buffer is full, as a device on a line with RTS/CTS does, so every line
it writes must reach the log exactly once however slowly the store commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.serial_line.settings import SerialLineSettings
from drivers.serial_line.transport import SerialLineDriver
from gateway.reading import Sample, StoredReading
from gateway.retry import Backoff
from gateway.settings import StoreSettings
from gateway.store import Store
from gateway.store.ingress import Congestion
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.drivers import running, wait_open
from tests.support.store import write_locked


@contextlib.asynccontextmanager
async def opened(path: Path, high_water: int, **kwargs: int) -> AsyncIterator[Store]:
    store = await Store.open(path, StoreSettings(), high_water=high_water, **kwargs)
    try:
        yield store
    finally:
        await store.close()


def values(stored: list[StoredReading]) -> list[int]:
    return [json.loads(r.payload)["value"] for r in stored]


def samples(first: int, count: int) -> list[Sample]:
    return [Sample("d", "n", n, time.time()) for n in range(first, first + count)]


def test_congestion_has_hysteresis() -> None:
    marks = Congestion(high_water=10)
    assert marks.low_water == 5
    assert [marks.update(p) for p in (0, 9, 10, 8, 6, 5, 9, 12, 4)] == [
        False,
        False,
        True,  # at the high-water mark
        True,
        True,  # still above the low-water mark
        False,  # down to it
        False,
        True,
        False,
    ]
    assert marks.episodes == 2


def test_a_high_water_mark_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="high_water"):
        Congestion(high_water=1)


async def test_the_store_is_congested_until_the_writer_catches_up(tmp_path: Path) -> None:
    path = tmp_path / "readings.db"
    async with opened(path, high_water=100) as store:
        assert not store.congested
        await store.wait_for_room()  # not congested: returns at once
        with write_locked(path):
            store.put_samples(samples(1, 99))
            assert not store.congested
            store.put_samples(samples(100, 1))
            assert store.congested
            waiting = asyncio.create_task(store.wait_for_room())
            await asyncio.sleep(0)  # let it start waiting
            assert not waiting.done()
        # The lock is gone: the writer commits and the waiter is let through.
        await asyncio.wait_for(waiting, timeout=10)
        assert not store.congested
        assert store.congestion_episodes == 1
        assert await store.flush() == 100
        assert store.stats().dropped == 0


async def test_a_producer_paused_before_a_failure_is_let_through_when_it_fails(
    tmp_path: Path,
) -> None:
    path = tmp_path / "readings.db"
    async with opened(path, high_water=100) as store:
        with write_locked(path):
            store.put_samples(samples(1, 200))
            assert store.congested
            waiting = asyncio.create_task(store.wait_for_room())
            # The writer gives up on the lock after SQLite's busy timeout: a failure.
            await wait_until(
                lambda: store.health_reason is not None, timeout=30, message="commit failure"
            )
            await asyncio.wait_for(waiting, timeout=10)
        assert await store.flush() == 200


async def test_a_store_that_cannot_commit_is_not_congested(tmp_path: Path) -> None:
    # A full disk: the store's own overflow policy applies to what drivers read, counted,
    # rather than drivers pausing while readings are lost uncounted in the device.
    async with opened(tmp_path / "readings.db", high_water=100, max_page_count=16) as store:
        for first in range(1, 20_001, 1000):
            store.put_samples(samples(first, 1000))
        await wait_until(lambda: "disk full" in (store.health_reason or ""), message="disk full")
        assert not store.congested
        await asyncio.wait_for(store.wait_for_room(), timeout=10)


async def test_a_slow_store_pauses_the_port_and_every_line_arrives_once(tmp_path: Path) -> None:
    count = 20_000
    link = tmp_path / "dev" / "counter"
    settings = SerialLineSettings(id="counter-1", port=str(link))
    # A mark far below one commit's worth at this rate: the driver pauses again and again.
    async with (
        opened(tmp_path / "data" / "readings.db", high_water=64) as store,
        PtyDevice("counter", link, rate=100_000, count=count, paused=True) as dev,
    ):
        driver = SerialLineDriver(settings, store, backoff=Backoff(0.02, 0.2, missing_poll=0.02))
        async with running(driver):
            await wait_open(driver)
            dev.resume()
            await wait_until(lambda: driver.status.pauses > 0, message="a pause")
            # Far more than the pty's buffer holds: only a resumed port gets them all.
            await wait_until(
                lambda: driver.status.readings == count, timeout=60, message="every line"
            )
        last = await store.flush()
        stored = await store.read_after(0, count + 1)
        assert values(stored) == list(range(1, count + 1))
        assert last == count
        assert store.congestion_episodes > 0
        assert store.stats().dropped == 0
        assert (dev.lines_written, dev.lines_lost) == (count, 0)
        assert driver.status.errors == 0


async def test_a_stuck_writer_holds_the_port_paused(tmp_path: Path) -> None:
    link = tmp_path / "dev" / "counter"
    path = tmp_path / "data" / "readings.db"
    settings = SerialLineSettings(id="counter-1", port=str(link))
    async with (
        opened(path, high_water=500) as store,
        PtyDevice("counter", link, rate=50_000, count=5000, paused=True) as dev,
    ):
        driver = SerialLineDriver(settings, store, backoff=Backoff(0.02, 0.2, missing_poll=0.02))
        async with running(driver):
            await wait_open(driver)
            with write_locked(path):
                dev.resume()
                await wait_until(lambda: driver.status.pauses == 1, message="a pause")
                # Paused: what was read stops short of what was written, at one chunk
                # (at most 1 KiB of lines) past the mark.
                assert 500 <= driver.status.readings < 500 + 1024 // len(b"n=1\n")
                assert store.congested
            await wait_until(lambda: driver.status.readings == 5000, message="every line")
        await store.flush()
        stored = await store.read_after(0, 5001)
        assert values(stored) == list(range(1, 5001))
        assert store.stats().dropped == 0
