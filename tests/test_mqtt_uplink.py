"""The MQTT uplink against a real mosquitto and a real store: shape, cursor, outages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.store import Store
from gateway.uplinks import MqttUplink
from tests.support.common import wait_for_value, wait_until
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.mqtt_uplink import (
    GATEWAY,
    assert_complete_and_ordered,
    put,
    running,
    settings_for,
    stored_payloads,
)
from tests.support.tcp_proxy import TcpProxy


async def test_delivers_per_device_messages_and_advances_cursor(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    devices = ("thermo-1", "thermo-2", "meter-7")
    last = await put(store, 300, devices)
    uplink = MqttUplink(settings_for(mosquitto.url, batch_max=40), GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == last, message="cursor at last seq")
        await wait_until(lambda: len(subscriber.seqs()) == 300, message="all readings")
        assert uplink.status.state == "connected"
        assert uplink.status.published_readings == 300
        assert uplink.status.in_flight == 0
        assert uplink.status.publish_latency.count == uplink.status.published_messages
        assert store.stats().depth == 0
    expected = await stored_payloads(store)
    assert_complete_and_ordered(subscriber, expected, set(devices))
    assert all(len(m.json()["readings"]) <= 40 for m in subscriber.telemetry())
    # Readings travel as the store encoded them: the bytes are the stored bytes.
    stored = {r.seq: r.payload for r in await store.read_after(0, 1000)}
    first = subscriber.telemetry()[0].payload
    seq = subscriber.telemetry()[0].json()["readings"][0]["seq"]
    assert stored[seq] in first
    assert await store.register_consumer("mqtt") == last


async def test_live_readings_flow_without_polling(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    uplink = MqttUplink(settings_for(mosquitto.url), GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.state == "connected", message="connected")
        for _ in range(5):
            last = await put(store, 3, ("a", "b"))
            await wait_for_value(lambda: uplink.status.acked_seq, last, "live reading acked")
    assert subscriber.seqs() == set(range(1, 16))


async def test_status_online_retained_and_offline_on_clean_stop(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    uplink = MqttUplink(settings_for(mosquitto.url), GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.state == "connected", message="connected")
        late = subscriber_factory(mosquitto, f"edge/{GATEWAY}/status")
        await wait_until(lambda: bool(late.messages("/status")), message="retained status")
        online = late.messages("/status")[0]
        assert online.retain
        assert online.json()["state"] == "online"
        assert online.json()["gateway"] == GATEWAY
    assert uplink.status.state == "stopped"
    after = subscriber_factory(mosquitto, f"edge/{GATEWAY}/status")
    await wait_until(lambda: bool(after.messages("/status")), message="retained offline")
    offline = after.messages("/status")[0].json()
    assert offline["state"] == "offline"
    assert "ts" in offline  # published by the gateway, not the will


async def test_will_says_offline_when_connection_dies(
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tcp_proxy_factory: Callable[[int], Any],
    store: Store,
) -> None:
    proxy: TcpProxy = await tcp_proxy_factory(mosquitto.port)
    watcher = subscriber_factory(mosquitto, f"edge/{GATEWAY}/status")
    uplink = MqttUplink(settings_for(proxy.url()), GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.state == "connected", message="connected")
        await wait_until(lambda: bool(watcher.messages("/status")), message="online")
        proxy.reset()
        will = {"gateway": GATEWAY, "state": "offline"}
        await wait_until(lambda: any(m.json() == will for m in watcher.messages()), message="will")
        # It comes back by itself and says so.
        await wait_until(
            lambda: watcher.messages()[-1].json()["state"] == "online", message="online again"
        )
        assert uplink.status.errors >= 1
        assert uplink.status.last_error is not None


async def test_cursor_waits_for_puback_and_blackhole_then_reset_loses_nothing(
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tcp_proxy_factory: Callable[[int], Any],
    store: Store,
) -> None:
    proxy: TcpProxy = await tcp_proxy_factory(mosquitto.port)
    subscriber = subscriber_factory(mosquitto)
    uplink = MqttUplink(settings_for(proxy.url(), keepalive=1), GATEWAY, store)
    async with running(uplink):
        first = await put(store, 100, ("a", "b"))
        await wait_until(lambda: uplink.status.acked_seq == first, message="first batch acked")
        proxy.blackhole()
        last = await put(store, 200, ("a", "b"))
        await wait_until(lambda: uplink.status.in_flight > 0, message="published, unacknowledged")
        # Published but never acknowledged: the cursor does not move.
        assert uplink.status.acked_seq == first
        assert store.stats().depth == last - first
        # The keepalive notices the dead link; reconnects hang in the black hole.
        await wait_until(lambda: uplink.status.state != "connected", message="dead link noticed")
        proxy.reset()
        proxy.resume()
        await wait_until(lambda: uplink.status.acked_seq == last, timeout=30, message="recovered")
    assert_complete_and_ordered(subscriber, await stored_payloads(store), {"a", "b"})


async def test_broker_restart_mid_stream_delivers_every_reading(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    devices = ("a", "b", "c")
    uplink = MqttUplink(settings_for(mosquitto.url, batch_max=20), GATEWAY, store)
    async with running(uplink):
        await put(store, 600, devices)
        await wait_until(lambda: len(subscriber.seqs()) > 0, message="delivery started")
        mosquitto.stop()
        await put(store, 600, devices)  # committed while the broker is down
        await wait_until(lambda: uplink.status.state != "connected", message="outage noticed")
        mosquitto.start()
        last = await put(store, 600, devices)
        await wait_until(lambda: uplink.status.acked_seq == last, timeout=30, message="caught up")
        await wait_until(lambda: len(subscriber.seqs()) == last, timeout=30, message="all arrived")
    assert_complete_and_ordered(subscriber, await stored_payloads(store), set(devices))


async def test_mqtt_311_delivers(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    last = await put(store, 50, ("a", "b"))
    uplink = MqttUplink(settings_for(mosquitto.url, protocol="3.1.1"), GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == last, message="acked over 3.1.1")
        await wait_until(lambda: len(subscriber.seqs()) == 50, message="all readings")
    assert_complete_and_ordered(subscriber, await stored_payloads(store), {"a", "b"})


async def test_rate_cap_makes_messages_carry_more_readings(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    uplink = MqttUplink(settings_for(mosquitto.url, max_messages_per_second=1.0), GATEWAY, store)
    commits = 20
    async with running(uplink):
        await wait_until(lambda: uplink.status.state == "connected", message="connected")
        for _ in range(commits):
            last = await put(store, 5)
        await wait_until(lambda: uplink.status.acked_seq == last, message="all acked")
    # The broker acknowledges before its copy reaches the subscriber.
    await wait_until(lambda: len(subscriber.seqs()) == 5 * commits, message="all received")
    messages = subscriber.telemetry()
    # Twenty commits, far fewer messages: the capped uplink packed them together.
    assert len(messages) < commits
    assert max(len(m.json()["readings"]) for m in messages) > 5


async def test_splits_messages_to_the_brokers_maximum_packet_size(
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
    store: Store,
) -> None:
    broker = mosquitto_factory(extra_config=["max_packet_size 4000"])
    subscriber = subscriber_factory(broker)
    last = await put(store, 400)
    uplink = MqttUplink(settings_for(broker.url, batch_max=500), GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == last, message="all acked")
    assert len(subscriber.seqs()) == 400
    assert all(len(m.payload) < 4000 for m in subscriber.telemetry())


async def test_unpublishable_device_goes_to_dead_letters(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    last = await put(store, 30, ("good", "bad+id"))
    uplink = MqttUplink(settings_for(mosquitto.url), GATEWAY, store, dead_letters=store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == last, message="cursor passes")
        await wait_until(lambda: len(subscriber.seqs()) == 15, message="good readings")
    assert uplink.status.refused == 15
    await store.flush()
    assert store.stats().dead_letters == 15
    assert {r["device"] for r in subscriber.readings()} == {"good"}
    assert "bad+id" in (uplink.status.last_error or "")


async def test_stops_cleanly_when_the_store_closes_first(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    watcher = subscriber_factory(mosquitto, f"edge/{GATEWAY}/status")
    last = await put(store, 10)
    uplink = MqttUplink(settings_for(mosquitto.url), GATEWAY, store)
    async with running(uplink) as task:
        await wait_until(lambda: uplink.status.acked_seq == last, message="acked")
        await store.close()
        await wait_until(task.done, message="uplink stopped")
        assert task.exception() is None
    assert uplink.status.state == "stopped"
    await wait_until(
        lambda: [m.json()["state"] for m in watcher.messages()][-1:] == ["offline"],
        message="offline status",
    )
