"""The uplink's pure parts: message planning, ack order, backoff, the token bucket."""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from gateway.rate import TokenBucket
from gateway.reading import Sample, StoredReading, encode
from gateway.retry import Backoff, Failure, retry_delay
from gateway.uplinks.batching import AckOrder, Batch, TelemetryPlanner


def stored(seq: int, device: str, value: float | str = 1.5) -> StoredReading:
    return StoredReading(seq, device, encode(seq, Sample(device, "t", value, 1764086400.0 + seq)))


def test_plan_groups_by_device_in_seq_order_with_the_stored_bytes() -> None:
    readings = [stored(seq, "ab"[seq % 2]) for seq in range(1, 11)]
    batch = Batch(10)
    messages = TelemetryPlanner("gw-1", "edge", batch_max=3).plan(readings, batch)
    assert [(m.device, [r.seq for r in m.readings]) for m in messages] == [
        ("b", [1, 3, 5]),
        ("b", [7, 9]),
        ("a", [2, 4, 6]),
        ("a", [8, 10]),
    ]
    for message in messages:
        assert message.topic == f"edge/gw-1/{message.device}/telemetry"
        body = json.loads(message.payload)
        assert body == {
            "gateway": "gw-1",
            "device": message.device,
            "readings": [json.loads(r.payload) for r in message.readings],
        }
        assert message.payload.endswith(
            b"[" + b",".join(r.payload for r in message.readings) + b"]}"
        )
    assert batch.unresolved == {1, 7, 2, 8}


def test_plan_escapes_ids_and_keeps_unicode() -> None:
    readings = [stored(1, 'pump "Ä"/1', "wet")]
    (message,) = TelemetryPlanner('gw "ü"', "edge", batch_max=10).plan(readings, Batch(1))
    assert json.loads(message.payload)["device"] == 'pump "Ä"/1'
    assert json.loads(message.payload)["gateway"] == 'gw "ü"'


def test_plan_splits_to_fit_the_maximum_packet_size() -> None:
    readings = [stored(seq, "a") for seq in range(1, 101)]
    planner = TelemetryPlanner("gw", "edge", batch_max=500)
    planner.max_packet = 1500
    messages = planner.plan(readings, Batch(100))
    assert [r.seq for m in messages for r in m.readings] == list(range(1, 101))
    assert len(messages) > 1
    assert all(len(m.payload) + len(m.topic) + 64 <= 1500 for m in messages)


def test_a_reading_larger_than_a_packet_still_gets_its_own_message() -> None:
    readings = [stored(1, "a"), stored(2, "a", "x" * 3000), stored(3, "a")]
    planner = TelemetryPlanner("gw", "edge", batch_max=500)
    planner.max_packet = 1000
    messages = planner.plan(readings, Batch(3))
    assert [[r.seq for r in m.readings] for m in messages] == [[1], [2], [3]]


def test_empty_read_makes_no_message_and_the_batch_is_resolved() -> None:
    order = AckOrder(5)
    batch = Batch(9)
    assert TelemetryPlanner("gw", "edge", 10).plan([], batch) == []
    assert order.add(batch)
    assert order.confirmed == 9


@given(
    devices=st.lists(st.sampled_from("abcd"), min_size=1, max_size=60),
    batch_max=st.integers(1, 7),
    read_size=st.integers(1, 25),
    seed=st.integers(0, 2**32),
)
def test_ack_order_never_passes_an_unresolved_reading(
    devices: list[str], batch_max: int, read_size: int, seed: int
) -> None:
    """PUBACKs in any order: ``confirmed`` is always the end of a fully resolved prefix."""
    readings = [stored(seq, device) for seq, device in enumerate(devices, start=1)]
    planner = TelemetryPlanner("gw", "edge", batch_max)
    order = AckOrder(0)
    pending = []
    for start in range(0, len(readings), read_size):
        part = readings[start : start + read_size]
        batch = Batch(part[-1].seq)
        pending += planner.plan(part, batch)
        order.add(batch)
    random.Random(seed).shuffle(pending)
    resolved: set[int] = set()
    for message in pending:
        order.resolve(message)
        resolved.update(r.seq for r in message.readings)
        expected = 0
        while expected + 1 in resolved:
            expected += 1
        assert order.confirmed == expected
    assert order.confirmed == len(readings)
    assert order.open_batches == 0


def test_network_backoff_grows_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 8.0, rng=random.Random(1))
    delays = [backoff.delay(Failure.TRANSIENT) for _ in range(10)]
    ceilings = [min(8.0, 0.5 * 2**n) for n in range(10)]
    assert all(0.5 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.delay(Failure.TRANSIENT) == 0.5


def test_rejections_wait_near_the_cap_from_the_first_try() -> None:
    rng = random.Random(2)
    delays = [retry_delay(Failure.REJECTED, 0, 0.5, 60.0, rng) for _ in range(50)]
    assert all(30.0 <= d <= 60.0 for d in delays)


def test_token_bucket_spaces_events_after_a_small_burst() -> None:
    now = [100.0]
    bucket = TokenBucket(10.0, clock=lambda: now[0])
    assert bucket.wait_time() == 0.0
    bucket.take()
    assert bucket.wait_time() == 0.1
    now[0] += 0.05
    assert abs(bucket.wait_time() - 0.05) < 1e-9
    now[0] += 10.0
    bucket.take()
    assert bucket.wait_time() == 0.1  # the burst never exceeds a tenth of a second's worth
