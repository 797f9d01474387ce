"""The MQTT uplink in-process: its settings, readings to send, a running uplink, delivery checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from gateway.interfaces import Uplink
from gateway.reading import Sample
from gateway.settings import MqttSettings
from gateway.store import Store
from tests.support.mosquitto import MqttSubscriber

GATEWAY = "gw-test"


def settings_for(url: str, **options: Any) -> MqttSettings:
    base = MqttSettings(url=url, reconnect_min=0.05, reconnect_max=0.5, keepalive=5)
    return replace(base, **options)


async def put(store: Store, count: int, devices: tuple[str, ...] = ("thermo-1",)) -> int:
    """Commit ``count`` readings spread over ``devices``; return the last seq."""
    now = time.time()
    store.put_samples(
        [Sample(devices[i % len(devices)], "t", 20.0 + i / 100, now) for i in range(count)]
    )
    return await store.flush()


@contextlib.asynccontextmanager
async def running(uplink: Uplink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(uplink.run(), name="uplink-under-test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stored_payloads(store: Store) -> dict[int, Any]:
    return {r.seq: json.loads(r.payload) for r in await store.read_after(0, 1_000_000)}


def delivered(subscriber: MqttSubscriber) -> dict[int, dict[str, Any]]:
    """The first copy of every reading the subscriber got, by seq.

    Checks what holds for any delivery: topics and gateway id, each message one
    device's readings in ascending seq, duplicates identical to the first copy, and
    each device's readings first seen in seq order.
    """
    first_seen: dict[int, dict[str, Any]] = {}
    order: dict[str, list[int]] = defaultdict(list)
    for message in subscriber.telemetry():
        body = message.json()
        assert message.topic == f"edge/{GATEWAY}/{body['device']}/telemetry"
        assert body["gateway"] == GATEWAY
        seqs = [r["seq"] for r in body["readings"]]
        assert seqs == sorted(seqs), "readings of a message must ascend"
        for reading in body["readings"]:
            assert reading["device"] == body["device"]
            first = first_seen.setdefault(reading["seq"], reading)
            if first is reading:
                order[body["device"]].append(reading["seq"])
            assert reading == first, f"duplicate of seq {reading['seq']} differs"
    for device, device_seqs in order.items():
        assert device_seqs == sorted(device_seqs), f"{device}: readings arrived out of order"
    return first_seen


def assert_complete_and_ordered(
    subscriber: MqttSubscriber, expected: dict[int, Any], devices: set[str]
) -> None:
    """Every stored reading arrived, duplicates identical, each device's in seq order."""
    by_seq = delivered(subscriber)
    assert {r["device"] for r in by_seq.values()} <= devices
    assert by_seq == expected
