"""High-priority readings overtake a backlog on a real mosquitto, each lane in order."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import pytest

from gateway.reading import Sample
from gateway.settings import DeviceSettings
from gateway.store import Store
from gateway.uplinks import MqttUplink
from gateway.uplinks.route import PriorityRules, Selection
from tests.support.common import wait_until
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.mqtt_uplink import GATEWAY, running, settings_for, stored_payloads

BACKLOG = 10_000


def rules() -> PriorityRules:
    return PriorityRules.of(
        [
            DeviceSettings(id="door", driver="serial_line", priority="high"),
            DeviceSettings(id="plc", driver="serial_line", sensor_priority={"trip": "high"}),
        ]
    )


@pytest.mark.timeout(120)
async def test_a_high_priority_reading_arrives_before_the_backlog_drains(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    # A small window makes the drain long, so that the order shows.
    settings = settings_for(mosquitto.url, max_inflight=4, batch_max=200)
    uplink = MqttUplink(settings, GATEWAY, store, selection=Selection(("*",), rules()))
    mosquitto.stop()
    async with running(uplink):
        await wait_until(lambda: uplink.status.state == "backoff", message="uplink down")
        # The backlog builds while the broker is away: a normal device, and the plc's
        # normal sensor; then the alarms.
        now = time.time()
        store.put_samples(
            [Sample("meter" if i % 2 else "plc", "load", i, now) for i in range(BACKLOG)]
        )
        store.put_samples([Sample("door", "open", 1, now), Sample("plc", "trip", 1, now)])
        last = await store.flush()

        async def priority_cursor_at(seq: int) -> bool:
            return (await store.consumers()).get("mqtt:priority") == seq

        # Still down, the priority lane has passed over the backlog (none of it is
        # high): on reconnect it starts at the alarms.
        await wait_until(lambda: priority_cursor_at(BACKLOG), message="priority lane scouted")
        assert (await store.consumers())["mqtt"] == 0
        mosquitto.start()
        await wait_until(lambda: subscriber.seqs() >= set(range(1, last + 1)), 60, message="all")
        await wait_until(lambda: uplink.status.acked_seq == last, message="acknowledged")
    arrival = [r["seq"] for r in subscriber.readings()]
    door, trip = last - 1, last
    backlog_done = arrival.index(BACKLOG)
    assert arrival.index(door) < backlog_done
    assert arrival.index(trip) < backlog_done
    # Within each lane every device's readings arrive in seq order.
    payloads = await stored_payloads(store)
    lanes: dict[tuple[str, bool], list[int]] = defaultdict(list)
    seen: set[int] = set()
    for seq in arrival:
        if seq in seen:
            continue
        seen.add(seq)
        reading = payloads[seq]
        high = reading["device"] == "door" or reading["sensor"] == "trip"
        lanes[reading["device"], high].append(seq)
    for key, seqs in lanes.items():
        assert seqs == sorted(seqs), key
    # Both cursors moved: retention waits for the lower.
    consumers = await store.consumers()
    assert consumers == {"mqtt": last, "mqtt:priority": last}
