"""The fleet chain on the clustered broker: gateways → 3-node RabbitMQ → 2 consumers → PostgreSQL.

Two real gateways publish MQTT 3.1.1 QoS 1 to one node of a private 3-node
RabbitMQ cluster (tests/support/cluster.py); two `edge-gateway consume` instances
share the quorum queue, connected first to another node, which therefore leads
the queue. Mid-stream, that node is killed with SIGKILL (the queue elects a new
leader, the consumers fail over to the third node), later one consumer instance
is killed with SIGKILL too. At the end PostgreSQL holds every seq of each
gateway exactly once, with no hole.

Booting a RabbitMQ cluster takes tens of seconds on this machine (docs/fleet.md),
so this runs under `make soak`; tests/test_consume.py runs the same consumer in the
default suite on mosquitto.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators import PtyDevice
from tests.support.cluster import RabbitCluster
from tests.support.common import wait_until
from tests.support.consumer_proc import ConsumerProcess
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.gateway_status import DRAIN_TIMEOUT, committed_at_least, drained, last_seq
from tests.support.landing import landed_bodies

pytestmark = [pytest.mark.soak, pytest.mark.timeout(900)]

PHASE = 400  # readings each gateway commits while a fault is in place


def _gateway(root: Path, gateway_id: str, mqtt_url: str, device: PtyDevice) -> GatewayProcess:
    root.mkdir()
    gw = GatewayProcess(root, gateway_id=gateway_id)
    gw.devices = [DeviceSpec("dev-a", device.link)]
    # RabbitMQ 3.10 speaks MQTT 3.1.1 only.
    gw.more_config = {
        "uplink": {
            "mqtt": {
                "url": mqtt_url,
                "topic_prefix": "edge",
                "protocol": "3.1.1",
                "keepalive": 2,
                "reconnect_min": 0.05,
                "reconnect_max": 0.5,
            }
        }
    }
    return gw


async def _phase(gateways: list[GatewayProcess], message: str) -> None:
    for gw in gateways:
        target = await last_seq(gw) + PHASE
        await wait_until(committed_at_least(gw, target), timeout=60, message=message)


async def test_every_seq_lands_once_across_kill9_of_a_broker_node_and_a_consumer(
    tmp_path: Path,
    rabbit_cluster: RabbitCluster,
    postgres_url: str,
    consumer_processes: list[ConsumerProcess],
) -> None:
    cluster = rabbit_cluster
    # Consumers try node 2 first: the queue they declare is led from there.
    brokers = [cluster.nodes[i].amqp_url for i in (1, 2, 0)]
    consumers = [
        ConsumerProcess(tmp_path / "consumers", brokers, postgres_url, name) for name in "ab"
    ]
    consumer_processes.extend(consumers)
    for consumer in consumers:
        consumer.start()
        await consumer.wait_connected()
    gateways: list[GatewayProcess] = []
    try:
        async with (
            PtyDevice("counter", tmp_path / "dev-1", rate=200) as dev1,
            PtyDevice("counter", tmp_path / "dev-2", rate=200) as dev2,
        ):
            gateways = [
                _gateway(tmp_path / f"gw-{i}", f"gw-{i}", cluster.nodes[0].mqtt_url, dev)
                for i, dev in ((1, dev1), (2, dev2))
            ]
            for gw in gateways:
                gw.start()
            for gw in gateways:
                await gw.wait_healthy(timeout=60)
            await _phase(gateways, "readings before the faults")

            cluster.kill9(1)  # the queue's leader and the consumers' node
            await _phase(gateways, "readings with one broker node dead")
            cluster.restart(1)

            consumers[1].kill9()
            await _phase(gateways, "readings with one consumer dead")
            consumers[1].start()
            await consumers[1].wait_connected()
            await _phase(gateways, "readings after the restarts")

        for gw in gateways:
            await wait_until(drained(gw), timeout=DRAIN_TIMEOUT, message=f"{gw.gateway_id} drained")
        for gw in gateways:
            last = await last_seq(gw)

            async def all_landed(gw: GatewayProcess = gw, last: int = last) -> bool:
                return len(await landed_bodies(postgres_url, gw.gateway_id)) >= last

            await wait_until(all_landed, timeout=DRAIN_TIMEOUT, message=f"{gw.gateway_id} landed")
            # The primary key (gateway, seq) holds each seq once: the keys are the proof.
            seqs = sorted(await landed_bodies(postgres_url, gw.gateway_id))
            assert seqs == list(range(1, last + 1)), f"{gw.gateway_id}: every seq, no hole"
        for consumer in consumers:
            assert consumer.proc is not None
            assert consumer.proc.poll() is None, f"{consumer.instance} died:\n{consumer.log_text()}"
    finally:
        for gw in gateways:
            gw.stop()
