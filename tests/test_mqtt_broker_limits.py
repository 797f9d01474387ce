"""The uplink within what the broker's CONNACK allows: Receive Maximum and Server Keep Alive.

A Receive Maximum of 1 comes from real mosquitto (``max_inflight_messages 1``), watched
on the wire by ``MqttWireProxy``: mosquitto announces the limit but acknowledges QoS 1
publishes as it reads them, so only the wire shows whether the uplink keeps to it.

A Server Keep Alive of 0 cannot come from mosquitto: 2.0 refuses ``max_keepalive`` below
10 (``Error: Invalid max_keepalive value (0)``) and sends a Server Keep Alive only to
lower a client's value, never 0. ``StandInBroker``, a minimal MQTT 5 server, sends it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable

from gateway.store import Store
from gateway.uplinks import MqttUplink
from tests.support.common import wait_until
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.mqtt_uplink import (
    GATEWAY,
    assert_complete_and_ordered,
    put,
    running,
    settings_for,
    stored_payloads,
)
from tests.support.mqtt_wire import MqttWireProxy, StandInBroker

DEVICES = ("thermo-1", "thermo-2", "meter-7")


async def test_receive_maximum_of_1_holds_status_and_telemetry_together(
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
    store: Store,
) -> None:
    broker = mosquitto_factory(extra_config=["max_inflight_messages 1"])
    subscriber = subscriber_factory(broker)
    first = await put(store, 200, DEVICES)
    async with MqttWireProxy(broker.port) as wire:
        uplink = MqttUplink(settings_for(wire.url(), batch_max=10), GATEWAY, store)
        async with running(uplink):
            await wait_until(lambda: uplink.status.acked_seq == first, message="backlog acked")
            # Live readings, then a stop with some of them in flight: the offline
            # status waits for their PUBACKs instead of going beyond the limit.
            for _ in range(5):
                last = await put(store, 30, DEVICES)
            await wait_until(lambda: wire.publishes > 25, message="live readings on the wire")
        assert wire.connack["ReceiveMaximum"] == 1
        assert wire.most_unacknowledged == 1
        assert wire.connects == 1
        assert uplink.status.errors == 0, uplink.status.last_error
    late = subscriber_factory(broker, f"edge/{GATEWAY}/status")
    await wait_until(lambda: bool(late.messages("/status")), message="retained status")
    offline = late.messages("/status")[-1].json()
    assert offline["state"] == "offline"
    assert "ts" in offline  # the gateway's own, not the will
    # What the stop left unacknowledged goes out with the next start.
    async with MqttWireProxy(broker.port) as wire:
        uplink = MqttUplink(settings_for(wire.url(), batch_max=10), GATEWAY, store)
        async with running(uplink):
            await wait_until(lambda: uplink.status.acked_seq == last, message="the rest acked")
        assert wire.most_unacknowledged == 1
    await wait_until(lambda: len(subscriber.seqs()) == last, message="every reading")
    assert_complete_and_ordered(subscriber, await stored_payloads(store), set(DEVICES))


async def test_a_stop_keeps_the_offline_status_behind_a_message_in_flight(
    mosquitto_factory: Callable[..., Mosquitto], store: Store
) -> None:
    broker = mosquitto_factory(extra_config=["max_inflight_messages 1"])
    async with MqttWireProxy(broker.port) as wire:
        uplink = MqttUplink(settings_for(wire.url()), GATEWAY, store)
        async with running(uplink):
            # The wire itself must have seen the online status and its PUBACK: the
            # uplink reports "connected" before it publishes the status.
            await wait_until(
                lambda: (
                    uplink.status.state == "connected"
                    and wire.publishes == 1
                    and not wire.unacknowledged
                    and uplink.status.in_flight == 0
                ),
                message="online status acknowledged",
            )
            wire.hold_from_broker()
            await put(store, 5)
            await wait_until(lambda: bool(wire.unacknowledged), message="telemetry in flight")
        # The stop found the slot taken and no PUBACK coming: the offline status stayed
        # back (the broker's will says offline instead) rather than exceed the limit.
        assert wire.publishes == 2  # the online status and the telemetry
        assert wire.most_unacknowledged == 1
        assert uplink.status.state == "stopped"


async def test_the_wire_count_sees_a_window_where_the_broker_allows_one(
    mosquitto: Mosquitto, store: Store
) -> None:
    # The control for the test above: with mosquitto's default Receive Maximum (20)
    # the same count sees several publishes unacknowledged at once.
    last = await put(store, 400, DEVICES)
    async with MqttWireProxy(mosquitto.port) as wire:
        uplink = MqttUplink(settings_for(wire.url(), batch_max=5), GATEWAY, store)
        async with running(uplink):
            await wait_until(lambda: uplink.status.acked_seq == last, message="all acked")
    assert wire.connack["ReceiveMaximum"] == 20
    assert 1 < wire.most_unacknowledged <= 20


def _keepalive_of_client_socket(port: int) -> tuple[int, int]:
    """SO_KEEPALIVE and TCP_KEEPIDLE of this process's socket bound to local ``port``."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with sock:
            try:
                if sock.family != socket.AF_INET or sock.getsockname()[1] != port:
                    continue
            except OSError:
                continue
            return (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            )
    raise AssertionError(f"no socket on local port {port}")


async def test_server_keep_alive_is_used_and_0_means_no_pings(store: Store) -> None:
    # Two uplinks side by side. "off" would ping every second by its own setting but
    # its broker says 0; "lowered" would ping once a minute but its broker says 1 s.
    # The pings of "lowered" are the clock: they show time enough for "off" to have
    # pinged several times, had it kept its own value.
    async with StandInBroker(ServerKeepAlive=0) as off, StandInBroker(ServerKeepAlive=1) as low:
        silent = MqttUplink(settings_for(off.url, keepalive=1), GATEWAY, store, name="off")
        pinging = MqttUplink(settings_for(low.url, keepalive=60), GATEWAY, store, name="lowered")
        async with running(silent), running(pinging):
            last = await put(store, 50, DEVICES)
            await wait_until(
                lambda: silent.status.acked_seq == pinging.status.acked_seq == last,
                message="both acked",
            )
            await wait_until(
                lambda: low.connections[0].pingreqs >= 3, timeout=30, message="pings at 1 s"
            )
            assert [c.pingreqs for c in off.connections] == [0]
            assert silent.status.state == "connected"
            assert silent.status.errors == 0, silent.status.last_error
            # Without MQTT keep alive, TCP keep alive after the configured time
            # notices a broker that vanished without closing the connection.
            assert _keepalive_of_client_socket(off.connections[0].peer_port) == (1, 1)
    delivered = [r["seq"] for p in off.telemetry() for r in json.loads(p)["readings"]]
    assert sorted(delivered) == list(range(1, last + 1))
