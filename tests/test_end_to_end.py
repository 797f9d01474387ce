"""The whole product as users run it: `edge-gateway run` as a process, simulated devices
on real pseudo-terminals, a real mosquitto behind a TCP proxy the test controls.

The outcome that matters: every committed reading reaches the broker (no gap in
`seq`), duplicates are identical, and each device's readings keep their order,
whatever happens to the link, the broker or the gateway process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.gateway_status import (
    DRAIN_TIMEOUT,
    acked_at_least,
    committed_at_least,
    drained,
    last_seq,
    uplink_state_is_not,
)
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.mqtt_uplink import delivered
from tests.support.tcp_proxy import TcpProxy

# Readings that must be committed in each phase while the fault is in place.
PHASE_READINGS = 300


def check_delivery(subscriber: MqttSubscriber, last_seq: int) -> None:
    """Every seq 1..last_seq arrived, besides what ``delivered`` checks of any delivery."""
    by_seq = delivered(subscriber)
    missing = set(range(1, last_seq + 1)) - by_seq.keys()
    assert not missing, (
        f"{len(missing)} committed readings never arrived, e.g. {sorted(missing)[:10]}"
    )
    # The counter's values follow the seqs: nothing was reordered between pty and broker.
    for device in {r["device"] for r in by_seq.values()}:
        values = [by_seq[s]["value"] for s in sorted(by_seq) if by_seq[s]["device"] == device]
        assert values == sorted(values), f"{device}: values out of order"


async def stop_and_check_delivery(
    gw: GatewayProcess, subscriber: MqttSubscriber, last: int
) -> None:
    """Wait until the subscriber has seq 1..last, stop the gateway cleanly, check it all."""
    await wait_until(
        lambda: subscriber.seqs() >= set(range(1, last + 1)),
        timeout=DRAIN_TIMEOUT,
        message=f"subscriber has every seq up to {last}",
    )
    assert gw.terminate() == 0
    check_delivery(subscriber, last)


async def fault_cycle(gw: GatewayProcess, proxy: TcpProxy, broker: Mosquitto) -> None:
    """A dead route then RST, a broker restart, a kill -9, while devices write.

    Each fault is followed by new readings acknowledged before the next one.
    """
    # The route dies silently: readings keep being committed, nothing is acked,
    # until the keepalive tells the uplink that the link is dead.
    proxy.blackhole()
    mark = await last_seq(gw)
    await wait_until(committed_at_least(gw, mark + PHASE_READINGS), timeout=30)
    await wait_until(uplink_state_is_not(gw, "connected"), timeout=30, message="dead link noticed")
    # The connection is then torn down (router reboot) and the route comes back.
    proxy.reset()
    proxy.resume()
    await wait_until(
        acked_at_least(gw, mark + PHASE_READINGS),
        timeout=DRAIN_TIMEOUT,
        message="ack after blackhole",
    )

    # The broker restarts under load.
    connections = proxy.accepted
    broker.restart()
    mark = await last_seq(gw)
    await wait_until(lambda: proxy.accepted > connections, timeout=30, message="reconnect")
    await wait_until(
        acked_at_least(gw, mark + PHASE_READINGS),
        timeout=DRAIN_TIMEOUT,
        message="ack after broker restart",
    )

    # The gateway is killed without warning while the devices keep writing.
    gw.kill9()
    gw.start()
    await gw.wait_healthy()
    mark = await last_seq(gw)
    await wait_until(
        acked_at_least(gw, mark + PHASE_READINGS),
        timeout=DRAIN_TIMEOUT,
        message="ack after kill -9",
    )


@asynccontextmanager
async def two_devices_through(
    proxy: TcpProxy, gw: GatewayProcess, tmp_path: Path, garbage_every: int = 0
) -> AsyncIterator[None]:
    """Two counter devices (300 and 200 lines/s) read by the gateway, its MQTT via ``proxy``.

    The devices stop when the block ends; the gateway keeps running.
    """
    async with (
        PtyDevice("counter", tmp_path / "dev-a", rate=300) as dev_a,
        PtyDevice("counter", tmp_path / "dev-b", rate=200, garbage_every=garbage_every) as dev_b,
    ):
        gw.devices = [DeviceSpec("dev-a", dev_a.link), DeviceSpec("dev-b", dev_b.link)]
        gw.mqtt_url = proxy.url()
        gw.start()
        await gw.wait_healthy()
        yield


async def test_every_committed_reading_arrives_across_outages_restarts_and_kill9(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gateway_process: GatewayProcess,
) -> None:
    subscriber = subscriber_factory(mosquitto, "edge/+/+/telemetry")
    proxy = await tcp_proxy_factory(mosquitto.port)
    gw = gateway_process
    async with two_devices_through(proxy, gw, tmp_path):
        await wait_until(lambda: len(subscriber.seqs()) >= 100, message="first deliveries")

        await fault_cycle(gw, proxy, mosquitto)

    # Devices are gone; the gateway drains what it committed.
    await wait_until(drained(gw), timeout=DRAIN_TIMEOUT, message="log drained")
    await stop_and_check_delivery(gw, subscriber, await last_seq(gw))


async def test_sigterm_commits_every_reading_read_and_restart_delivers_it(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gateway_process: GatewayProcess,
) -> None:
    proxy = await tcp_proxy_factory(mosquitto.port)
    # The cloud is unreachable while the gateway reads: everything waits in the log.
    proxy.blackhole()
    gw = gateway_process
    async with PtyDevice("counter", tmp_path / "dev-a", rate=2000) as dev:
        gw.devices = [DeviceSpec("dev-a", dev.link)]
        gw.mqtt_url = proxy.url()
        gw.start()
        await gw.wait_healthy()
        await wait_until(committed_at_least(gw, 500), message="readings committed")
        # Stopped while the device is still writing fast.
        assert gw.terminate() == 0
    stopped_log = gw.log_text()
    committed = gw.queue_stats()["last_seq"]
    # The driver's own count of what it read, logged at stop, is all committed.
    read_counts = [
        int(line.rsplit(" ", 2)[-2])
        for line in stopped_log.splitlines()
        if "dev-a: read" in line and "readings" in line
    ]
    assert read_counts, f"no read count in the log:\n{stopped_log}"
    assert committed == read_counts[-1]

    subscriber = subscriber_factory(mosquitto, "edge/+/+/telemetry")
    proxy.resume()
    gw.start()
    await gw.wait_healthy()
    await stop_and_check_delivery(gw, subscriber, committed)


async def test_hostile_serial_input_keeps_the_gateway_up_and_counts_dead_letters(
    tmp_path: Path, gateway_process: GatewayProcess
) -> None:
    gw = gateway_process
    async with PtyDevice("counter", tmp_path / "dev-a", rate=200, garbage_every=20) as dev:
        gw.devices = [DeviceSpec("dev-a", dev.link)]
        gw.start()
        await gw.wait_healthy()
        await wait_until(committed_at_least(gw, 100), message="readings flowing")
        # A megabyte without a newline, NUL bytes and invalid UTF-8, straight into the line.
        dev.inject(b"x" * 1_000_000)
        dev.inject(b"\n\x00\x00n=\x00\n\xff\xfe\xfd=1\n")
        before = await last_seq(gw)
        await wait_until(committed_at_least(gw, before + 200), message="valid lines after garbage")
        status = await gw.status()
        assert status["devices"]["dev-a"]["errors"] >= 3
        assert status["store"]["dead_letters"] >= 3
        assert gw.terminate() == 0
