"""Bounds on the log: bytes (both overflow policies) and age; every drop is counted."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.reading import DeadLetter
from gateway.store import Store, schema, trim
from gateway.store.planner import TransactionPlan, growth_bound
from tests.support.common import wait_until
from tests.support.store import opened, sample

MAX_BYTES = 256 * 1024


async def _stored_seqs(store: Store) -> list[int]:
    return [r.seq for r in await store.read_after(0, 1_000_000)]


async def _put_rounds(store: Store, rounds: int, per_round: int) -> None:
    for r in range(rounds):
        store.put_samples([sample(r * per_round + i) for i in range(per_round)])
        await store.flush()


async def test_drop_oldest_keeps_the_newest_within_max_bytes(tmp_path: Path) -> None:
    async with opened(tmp_path, max_bytes=MAX_BYTES, overflow="drop_oldest") as store:
        await store.register_consumer("mqtt")  # never acks: everything stays unsent
        await _put_rounds(store, rounds=20, per_round=500)
        stats = store.stats()
        seqs = await _stored_seqs(store)
        assert stats.last_seq == 10_000
        assert seqs == list(range(seqs[0], 10_001))  # the newest, contiguous
        assert stats.dropped == 10_000 - len(seqs) > 0
        assert stats.depth == len(seqs)
        assert stats.bytes <= 2 * MAX_BYTES
        assert store.health_reason is None
    async with opened(tmp_path, max_bytes=MAX_BYTES) as store:
        assert store.stats().dropped == 10_000 - len(seqs)  # the counter is persisted


async def test_reject_new_keeps_the_oldest_and_refuses_the_rest(tmp_path: Path) -> None:
    async with opened(tmp_path, max_bytes=MAX_BYTES, overflow="reject_new") as store:
        await store.register_consumer("mqtt")
        await _put_rounds(store, rounds=20, per_round=500)
        stats = store.stats()
        seqs = await _stored_seqs(store)
        assert seqs == list(range(1, stats.last_seq + 1))  # nothing unsent was deleted
        assert stats.dropped == 10_000 - stats.last_seq > 0
        assert store.health_reason is not None
        assert "store full" in store.health_reason
        # Once the consumer has them, sent readings make room even within history.
        await store.ack("mqtt", stats.last_seq)
        store.put_samples([sample(1)])
        assert await store.flush() == stats.last_seq + 1
        assert store.health_reason is None
        assert store.stats().dropped == stats.dropped


async def test_readings_older_than_max_age_are_dropped_and_counted(tmp_path: Path) -> None:
    old = time.time() - 1000
    async with opened(tmp_path, max_age=100.0, history=3600.0) as store:
        await store.register_consumer("mqtt")
        store.put_samples([sample(i, ts=old + i) for i in range(40)])
        store.put_samples([sample(i) for i in range(10)])
        await store.flush()
        await wait_until(lambda: store.stats().dropped == 40, message="old readings dropped")
        assert await _stored_seqs(store) == list(range(41, 51))
        assert store.stats().depth == 10


async def test_expired_readings_every_consumer_has_are_not_counted_as_dropped(
    tmp_path: Path,
) -> None:
    old = time.time() - 1000
    async with opened(tmp_path, max_age=100.0, history=3600.0) as store:
        await store.register_consumer("mqtt")
        store.put_samples([sample(i, ts=old) for i in range(10)])
        await store.ack("mqtt", await store.flush())
        await wait_until(lambda: _is_empty(store), message="expired rows deleted")
        assert store.stats().dropped == 0


async def _is_empty(store: Store) -> bool:
    return await store.read_after(0, 1) == []


def test_growth_estimate_between_measurements_never_falls_short(tmp_path: Path) -> None:
    """max_bytes is measured only when the estimate reaches it, so it must be an upper bound."""
    conn = schema.connect(tmp_path / "readings.db", "normal")
    schema.create_schema(conn)
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    seq = 0
    shapes = [(1, 40), (5, 120), (200, 90), (3, 5000), (1, 70_000), (1000, 300), (1, 1)]
    for count, size in shapes * 3:
        rows = [(seq + i + 1, time.time(), f"device-{i % 7}", b"x" * size) for i in range(count)]
        letters = [DeadLetter("dev", "bad line", b"y" * size, time.time())]
        seq += count
        before = trim.used_bytes(conn, page)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO readings (seq, ts, device, payload) VALUES (?, ?, ?, ?)", rows
        )
        conn.executemany(
            "INSERT INTO dead_letters (ts, device, reason, raw) VALUES (?, ?, ?, ?)",
            [(d.ts, d.device, d.reason, d.raw) for d in letters],
        )
        conn.execute("COMMIT")
        grown = trim.used_bytes(conn, page) - before
        batch = TransactionPlan([], letters, {}, [], rows=rows)
        assert grown <= growth_bound(batch, page), (count, size)
    conn.close()
