"""The log's core: seq assignment, group commit, listeners, reads, cursors, retention."""

from __future__ import annotations

import asyncio
import fnmatch
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import StoreClosedError, StoreError
from gateway.reading import DeadLetter, Sample, StoredReading, encode
from gateway.store import Store
from tests.support.common import wait_until
from tests.support.store import opened, sample


async def test_fresh_store_starts_at_one_and_stores_encoded_bytes(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        assert store.last_seq == 0
        s = sample(0)
        store.put_samples([s])
        assert await store.wait_beyond(0) == 1
        [stored] = await store.read_after(0, 10)
        assert stored == StoredReading(1, "thermo-1", encode(1, s))


async def test_seqs_unique_and_ordered_under_concurrent_producers(tmp_path: Path) -> None:
    batches: list[Sequence[StoredReading]] = []
    async with opened(tmp_path) as store:
        store.add_listener(batches.append)

        async def produce(device: str) -> None:
            for i in range(200):
                store.put_samples([sample(i, device), sample(i + 1, device)])
                if i % 7 == 0:
                    await asyncio.sleep(0)

        async with asyncio.TaskGroup() as group:
            for d in range(8):
                group.create_task(produce(f"dev-{d}"))
        last = await store.flush()
        await wait_until(lambda: sum(len(b) for b in batches) == 3200, message="all announced")
        assert last == 3200
        announced = [r.seq for b in batches for r in b]
        assert announced == list(range(1, 3201))
        stored = await store.read_after(0, 10_000)
        assert [r.seq for r in stored] == announced
        # Each device's samples keep the order they were put in.
        for d in range(8):
            values = [r.payload for r in stored if r.device == f"dev-{d}"]
            assert len(values) == 400


async def test_batches_grow_under_load(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        n = 5000
        for i in range(n):
            store.put_samples([sample(i)])
        await store.flush()
        stats = store.stats()
        assert stats.committed_readings == n
        assert stats.commits < n / 10
        assert stats.last_seq == n


async def test_one_reading_alone_is_committed_without_waiting_for_more(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        for expected in (1, 2, 3):
            store.put_samples([sample(expected)])
            assert await store.wait_beyond(expected - 1) == expected


async def test_listeners_get_every_batch_in_order_and_can_be_removed(tmp_path: Path) -> None:
    first: list[int] = []
    second: list[int] = []

    def on_first(batch: Sequence[StoredReading]) -> None:
        first.extend(r.seq for r in batch)

    def on_second(batch: Sequence[StoredReading]) -> None:
        second.extend(r.seq for r in batch)

    async with opened(tmp_path) as store:
        store.add_listener(on_first)
        store.add_listener(on_second)
        for i in range(50):
            store.put_samples([sample(i)] * (i % 3 + 1))
            if i % 5 == 0:
                await store.flush()
        last = await store.flush()
        await wait_until(lambda: len(second) == last, message="second listener")
        assert first == second == list(range(1, last + 1))
        store.remove_listener(on_second)
        store.put_samples([sample(0)])
        await store.flush()
        await wait_until(lambda: len(first) == last + 1, message="first listener")
        assert len(second) == last


async def test_a_failing_listener_does_not_starve_the_others(tmp_path: Path) -> None:
    seen: list[int] = []
    errors: list[object] = []

    def broken(batch: Sequence[StoredReading]) -> None:
        raise RuntimeError("listener bug")

    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
    async with opened(tmp_path) as store:
        store.add_listener(broken)
        store.add_listener(lambda b: seen.extend(r.seq for r in b))
        store.put_samples([sample(1), sample(2)])
        await store.flush()
        await wait_until(lambda: seen == [1, 2], message="healthy listener")
        assert errors


async def test_wait_beyond_wakes_when_a_later_seq_commits(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        store.put_samples([sample(1)])
        await store.flush()
        waiter = asyncio.create_task(store.wait_beyond(1))
        await asyncio.sleep(0)
        assert not waiter.done()
        store.put_samples([sample(2), sample(3)])
        assert await waiter == 3
        assert await store.wait_beyond(0) == 3


DEVICES = ["thermo-1", "thermo-2", "thermo-10", "gps-a", "x[1]", "Thermo-1", "a*b", "a?b"]


@pytest.mark.parametrize(
    "glob",
    ["thermo-*", "thermo-?", "[tg]*", "[!t]*", "x[[]1]", "*1", "a*b", "Thermo*", "*", "[", "x[1"],
)
async def test_read_after_filters_devices_with_fnmatch_semantics(tmp_path: Path, glob: str) -> None:
    async with opened(tmp_path) as store:
        store.put_samples([sample(i, d) for i, d in enumerate(DEVICES)])
        await store.flush()
        got = await store.read_after(0, 100, device_glob=glob)
        assert [r.device for r in got] == [d for d in DEVICES if fnmatch.fnmatchcase(d, glob)]


device_names = st.text(alphabet="ab-[]!*?^\\", min_size=1, max_size=6)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(devices=st.lists(device_names, min_size=1, max_size=6), glob=device_names)
async def test_device_glob_matches_fnmatch_for_any_pattern(
    tmp_path_factory: pytest.TempPathFactory, devices: list[str], glob: str
) -> None:
    async with opened(tmp_path_factory.mktemp("glob")) as store:
        store.put_samples([sample(i, d) for i, d in enumerate(devices)])
        await store.flush()
        got = await store.read_after(0, 100, device_glob=glob)
        assert [r.device for r in got] == [d for d in devices if fnmatch.fnmatchcase(d, glob)]


async def test_read_after_pages_with_limit(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        store.put_samples([sample(i) for i in range(25)])
        await store.flush()
        pages: list[int] = []
        after = 0
        while chunk := await store.read_after(after, 10):
            pages.append(len(chunk))
            after = chunk[-1].seq
        assert pages == [10, 10, 5]
        assert await store.read_after(0, 0) == []


async def test_cursors_are_durable_and_monotonic(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        assert await store.register_consumer("mqtt") == 0
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()
        await store.ack("mqtt", 7)
        await store.ack("mqtt", 3)  # never moves back
        with pytest.raises(StoreError):
            await store.ack("mqtt", 11)
        assert await store.register_consumer("mqtt") == 7
    async with opened(tmp_path) as store:
        assert await store.register_consumer("mqtt") == 7
        assert await store.register_consumer("other") == 0


async def test_depth_counts_unacked_readings_of_registered_consumers(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()
        assert store.stats().depth == 0  # nobody to deliver to
        await store.register_consumer("a")
        assert store.stats().depth == 10
        await store.register_consumer("b")
        await store.ack("a", 6)
        assert store.stats().depth == 10
        await store.ack("b", 4)
        assert store.stats().depth == 6
        assert store.stats().oldest_unsent_ts is not None
        await store.ack("a", 10)
        await store.ack("b", 10)
        assert store.stats().depth == 0
        assert store.stats().oldest_unsent_ts is None
        store.put_samples([sample(1)])
        await store.flush()
        assert store.stats().depth == 1
    # A cursor persisted by an earlier run does not count until it registers again.
    async with opened(tmp_path) as store:
        await store.register_consumer("a")
        assert store.stats().depth == 1


async def test_retention_deletes_only_behind_every_cursor(tmp_path: Path) -> None:
    async with opened(tmp_path, history=0.0, startup_grace=0.0) as store:
        await store.register_consumer("a")
        await store.register_consumer("b")
        store.put_samples([sample(i) for i in range(100)])
        await store.flush()
        await store.ack("a", 80)
        await store.ack("b", 40)

        await wait_until(lambda: _oldest_is(store, 41), message="rows up to 40 deleted")
        await store.ack("b", 100)
        await wait_until(lambda: _oldest_is(store, 81), message="rows up to 80 deleted")
        assert store.stats().dropped == 0


async def _oldest_is(store: Store, seq: int) -> bool:
    return (await store.read_after(0, 1))[0].seq == seq


async def test_history_keeps_acknowledged_readings_for_replay(tmp_path: Path) -> None:
    async with opened(tmp_path, history=3600.0, startup_grace=0.0) as store:
        await store.register_consumer("a")
        store.put_samples([sample(i) for i in range(20)])
        await store.ack("a", await store.flush())
        store.put_samples([sample(1)])  # a later turn runs retention again
        await store.flush()
        assert len(await store.read_after(0, 100)) == 21


async def test_unregistered_cursor_holds_retention_only_during_start_grace(
    tmp_path: Path,
) -> None:
    async with opened(tmp_path) as store:
        await store.register_consumer("old-uplink")
        store.put_samples([sample(i) for i in range(30)])
        await store.flush()
    # Within the grace period the old cursor still protects its unsent rows.
    async with opened(tmp_path, history=0.0, startup_grace=3600.0) as store:
        await store.register_consumer("a")
        await store.ack("a", 30)
        store.put_samples([sample(1)])
        await store.flush()
        assert (await store.read_after(0, 1))[0].seq == 1
    async with opened(tmp_path, history=0.0, startup_grace=0.0) as store:
        await store.register_consumer("a")
        await store.ack("a", 31)
        await wait_until(lambda: _empty(store), message="retention past the old cursor")
        assert store.stats().depth == 0


async def _empty(store: Store) -> bool:
    return await store.read_after(0, 1) == []


async def test_seq_never_reused_after_rows_are_deleted(tmp_path: Path) -> None:
    async with opened(tmp_path, history=0.0, startup_grace=0.0) as store:
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()
        await wait_until(lambda: _empty(store), message="everything expired")
    async with opened(tmp_path) as store:
        assert store.last_seq == 10
        store.put_samples([sample(0)])
        assert await store.flush() == 11


async def test_close_commits_everything_already_put(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        for i in range(1000):
            store.put_samples([sample(i)])
    async with opened(tmp_path) as store:
        assert store.last_seq == 1000
        assert len(await store.read_after(0, 2000)) == 1000
        await store.close()
        with pytest.raises(StoreClosedError):
            store.put_samples([sample(0)])


async def test_dead_letters_are_stored_and_counted(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        store.put_dead_letter(DeadLetter("thermo-1", "bad line", b"t=\xff\x00", 1.0))
        store.put_dead_letter(DeadLetter("gps", "bad checksum", b"$GPGGA*00", 2.0))
        await store.flush()
        assert store.stats().dead_letters == 2
    with sqlite3.connect(tmp_path / "readings.db") as conn:
        rows = conn.execute("SELECT device, reason, raw FROM dead_letters ORDER BY id").fetchall()
    assert rows == [("thermo-1", "bad line", b"t=\xff\x00"), ("gps", "bad checksum", b"$GPGGA*00")]
    async with opened(tmp_path) as store:
        assert store.stats().dead_letters == 2


async def test_a_sample_json_cannot_carry_becomes_a_dead_letter(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        store.put_samples([sample(1), Sample("d", "t", 1.0, float("nan")), sample(2)])
        assert await store.flush() == 2
        assert store.stats().dead_letters == 1
        assert [r.seq for r in await store.read_after(0, 10)] == [1, 2]


async def test_cancelled_waiters_do_not_pile_up(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        for _ in range(100):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.001):
                    await store.wait_beyond(0)
        assert store._waiters == []  # nothing else shows the pile-up before memory does
        store.put_samples([sample(1)])
        assert await store.wait_beyond(0) == 1
        assert store.stats().last_seq == 1


async def test_the_caller_may_reuse_its_list(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        buffer = [sample(1), sample(2)]
        store.put_samples(buffer)
        buffer.clear()
        assert await store.flush() == 2


# Unwatched, commits are spaced by commit_spacing (1 s here); watched, by the stream's
# pace, and never further apart than commit_spacing.
@pytest.mark.parametrize(("watched", "commits"), [(None, [1, 2]), (0.0, [1, 1, 1]), (60.0, [1, 2])])
async def test_a_steady_trickle_shares_commits_unless_live_clients_watch(
    tmp_path: Path, watched: float | None, commits: list[int]
) -> None:
    async with opened(tmp_path, commit_spacing=1.0) as store:
        committed: list[int] = []
        store.add_listener(lambda batch: committed.append(len(batch)) if batch else None)
        store.set_watched(watched)
        assert store.paced == (watched is None)
        store.put_samples([sample(1)])
        await wait_until(lambda: store.last_seq == 1, message="the first commit")
        # Two more arrivals a moment apart: within the spacing, so one commit holds
        # both; while a client watches and the pace allows, each is committed as it comes.
        store.put_samples([sample(2)])
        await asyncio.sleep(0.2)
        store.put_samples([sample(3)])
        await wait_until(lambda: store.last_seq == 3, message="all three")
        assert committed == commits
