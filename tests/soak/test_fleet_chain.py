"""The whole chain under faults: a fleet → 3-node RabbitMQ → 2 consumers → PostgreSQL.

`edge-gateway fleet-sim` runs N real gateways (20 here; `FLEET_CHAIN_GATEWAYS=200`
for the full fleet) at 1.5 readings/s, spread over the three nodes' MQTT listeners:
gateway i connects to node i mod 3 and, when that node refuses, to the next one.
Two `edge-gateway consume` instances share the quorum queue. Under load: kill -9 of
one broker node (then its restart), of one consumer instance (then its restart), of
10 % of the gateways (fleet-sim restarts them), and a blackholed link for another
10 %. At the end PostgreSQL holds every seq 1..last committed of every gateway (read
from each gateway's store by fleet-sim's report) exactly once: the primary key
``(gateway, seq)`` holds a seq once, so the count and the bounds prove no hole.

Run: ``.venv/bin/python -m pytest tests/soak/test_fleet_chain.py -m soak -s``
(about 5 minutes with 20 gateways on a 2-core machine; docs/fleet.md has a run).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.support.cli import ROOT
from tests.support.cluster import RabbitCluster
from tests.support.common import wait_until
from tests.support.consumer_proc import ConsumerProcess

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]

GATEWAYS = int(os.environ.get("FLEET_CHAIN_GATEWAYS", "20"))
RATE = 1.5  # readings per second per gateway
# Seconds after the fleet started: fleet-sim's own faults, apart from the test's.
GATEWAY_KILL_AT = 40
BLACKHOLE_AT = 60
BLACKHOLE_FOR = 30
LANDED_TIMEOUT = 300.0


async def _landed(url: str) -> dict[str, tuple[int, int, int]]:
    """gateway -> (rows, lowest seq, highest seq) in the landing table."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "SELECT gateway, count(*), min(seq), max(seq) FROM readings GROUP BY gateway"
        )
        return {gw: (n, low, high) for gw, n, low, high in await cursor.fetchall()}


async def _total(url: str) -> int:
    return sum(n for n, _, _ in (await _landed(url)).values())


async def _more_landed(url: str, rows: int, message: str) -> None:
    """Until ``rows`` more rows than now have landed: the chain still moves."""
    target = await _total(url) + rows

    async def moved() -> bool:
        return await _total(url) >= target

    await wait_until(moved, timeout=LANDED_TIMEOUT, interval=1.0, message=message)


def _start_fleet(cluster: RabbitCluster, directory: Path, stderr: Path) -> subprocess.Popen[bytes]:
    """fleet-sim over the cluster's three MQTT listeners, with its own gateway faults."""
    nodes = [arg for node in cluster.nodes for arg in ("--broker", node.mqtt_url)]
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "fleet-sim",
                str(GATEWAYS),
                *nodes,
                "--mqtt-protocol",
                "3.1.1",  # RabbitMQ 3.x speaks MQTT 3.1.1
                "--dir",
                str(directory),
                "--rate",
                str(RATE),
                "--fault",
                f"kill9:0.1@{GATEWAY_KILL_AT}",
                "--fault",
                f"blackhole:0.1@{BLACKHOLE_AT}+{BLACKHOLE_FOR}",
                "--restart-after",
                "5",
                "--drain",
                "300",
                "--seed",
                "14",
            ],
            cwd=ROOT,
            stderr=err,
        )


async def test_every_seq_of_every_gateway_lands_once_through_every_fault(
    tmp_path: Path,
    rabbit_cluster: RabbitCluster,
    postgres_url: str,
    consumer_processes: list[ConsumerProcess],
) -> None:
    cluster = rabbit_cluster
    started = time.monotonic()
    brokers = [cluster.nodes[i].amqp_url for i in (1, 2, 0)]
    consumers = [
        ConsumerProcess(tmp_path / "consumers", brokers, postgres_url, name) for name in "ab"
    ]
    consumer_processes.extend(consumers)
    for consumer in consumers:
        consumer.start()
        await consumer.wait_connected()

    directory = tmp_path / "fleet"
    stderr = tmp_path / "fleet-sim.err"
    fleet = _start_fleet(cluster, directory, stderr)
    try:
        # Every gateway heard from in PostgreSQL: the whole chain runs.
        async def all_landing() -> bool:
            assert fleet.poll() is None, stderr.read_text()
            return len(await _landed(postgres_url)) == GATEWAYS

        await wait_until(all_landing, timeout=600, interval=1.0, message="every gateway landing")
        per_phase = GATEWAYS * 10  # rows: several seconds of the fleet's readings

        await asyncio.to_thread(cluster.kill9, 1)  # the queue's leader, the consumers' node
        await _more_landed(postgres_url, per_phase, "rows with broker node 2 dead")
        await asyncio.to_thread(cluster.restart, 1)
        await _more_landed(postgres_url, per_phase, "rows after node 2 came back")

        consumers[1].kill9()
        await _more_landed(postgres_url, per_phase, "rows with one consumer dead")
        consumers[1].start()
        await consumers[1].wait_connected()

        # fleet-sim's own faults: 10 % killed and restarted, 10 % blackholed.
        async def gateway_faults_applied() -> bool:
            assert fleet.poll() is None, stderr.read_text()
            return stderr.read_text().count(" of sim-") >= 2

        await wait_until(gateway_faults_applied, timeout=600, interval=1.0, message="faults")
        await _more_landed(postgres_url, per_phase, "rows after every fault")
        # SIGTERM: fleet-sim lifts the blackhole, waits until every log is acknowledged
        # by the broker, stops the gateways and writes its report.
        fleet.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(fleet.wait, 600) == 0, stderr.read_text()
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.wait()

    report = json.loads((directory / "fleet-report.json").read_text())
    assert report["drained"] is True
    assert report["unsent"] == 0
    kinds = sorted(f["kind"] for f in report["faults"])
    assert kinds == ["blackhole", "kill9"]
    last = {m["id"]: m["last_seq"] for m in report["members"]}
    assert len(last) == GATEWAYS
    assert all(seq > 0 for seq in last.values())

    async def all_landed() -> bool:
        landed = await _landed(postgres_url)
        return all(landed.get(gw, (0, 0, 0))[0] >= seq for gw, seq in last.items())

    await wait_until(all_landed, timeout=LANDED_TIMEOUT, interval=1.0, message="all landed")
    landed = await _landed(postgres_url)
    for gateway_id, seq in last.items():
        # Rows = seqs 1..last: with (gateway, seq) unique, no hole and no extra.
        assert landed[gateway_id] == (seq, 1, seq), gateway_id
    for consumer in consumers:
        assert consumer.proc is not None
        assert consumer.proc.poll() is None, f"{consumer.instance} died:\n{consumer.log_text()}"
    total = sum(last.values())
    summary = (
        f"fleet chain: {GATEWAYS} gateways, {total} readings landed once each, "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print(summary)
    (tmp_path / "summary.txt").write_text(summary + "\n")
