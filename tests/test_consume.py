"""`edge-gateway consume`: from the broker into the database, each (gateway, seq) once.

On the single-node default, mosquitto, two consumer instances share the load
through an MQTT 5 shared subscription. A real gateway publishes; one instance is
killed with SIGKILL mid-stream and comes back under its name; PostgreSQL ends up
with every seq exactly once. Hostile messages are parked and counted without
stopping the stream, and a seq hole is reported and asked back with `resend`.
The 3-node RabbitMQ cluster runs the same chain in tests/soak/test_consume_cluster.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.cli import main
from gateway.cloud.consume import Consumer, ConsumerSettings, open_database
from gateway.cloud.consumer_tables import open_tables
from gateway.cloud.landing import open_landing
from gateway.cloud.sources import MqttSharedSource, SourceSettings, without_password
from gateway.reading import Sample
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.consumer_proc import ConsumerProcess
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.gateway_status import DRAIN_TIMEOUT, committed_at_least, drained, last_seq
from tests.support.landing import landed_bodies
from tests.support.mosquitto import Mosquitto, MqttSubscriber, TlsFiles, write_password_file
from tests.support.mqtt_uplink import GATEWAY
from tests.support.uplinks import gateway_running, store_of, uplink


async def test_two_instances_land_every_seq_once_across_a_kill9_of_one(
    tmp_path: Path,
    mosquitto: Mosquitto,
    postgres_url: str,
    gateway_process: GatewayProcess,
    consumer_processes: list[ConsumerProcess],
) -> None:
    consumers = [
        ConsumerProcess(tmp_path / "consumers", [mosquitto.url], postgres_url, name)
        for name in ("a", "b")
    ]
    consumer_processes.extend(consumers)
    for consumer in consumers:
        consumer.start()
    for consumer in consumers:
        await consumer.wait_connected()
    gw = gateway_process
    async with PtyDevice("counter", tmp_path / "dev-a", rate=400) as device:
        gw.devices = [DeviceSpec("dev-a", device.link)]
        gw.mqtt_url = mosquitto.url
        gw.start()
        await gw.wait_healthy(timeout=60)
        await wait_until(committed_at_least(gw, 300), timeout=60, message="first readings")
        # Killed while the stream runs: what it held unacknowledged stays in its
        # session, and it comes back under its name while the stream goes on.
        consumers[1].kill9()
        consumers[1].start()
        before = await last_seq(gw)
        await wait_until(committed_at_least(gw, before + 300), timeout=60, message="more readings")
    await wait_until(drained(gw), timeout=DRAIN_TIMEOUT, message="gateway drained")
    last = await last_seq(gw)

    async def all_landed() -> bool:
        return len(await landed_bodies(postgres_url, gw.gateway_id)) >= last

    await wait_until(all_landed, timeout=DRAIN_TIMEOUT, message=f"{last} rows landed")
    # The primary key (gateway, seq) holds each seq once: the keys are the proof.
    seqs = sorted(await landed_bodies(postgres_url, gw.gateway_id))
    assert seqs == list(range(1, last + 1)), "every seq landed, none missing"
    await consumers[1].wait_connected()
    for consumer in consumers:
        assert consumer.proc is not None
        assert consumer.proc.poll() is None, f"{consumer.instance} died:\n{consumer.log_text()}"
    # Both instances carried part of the stream: the group split it.
    for consumer in consumers:
        assert "edge_consumer_rows_landed_total 0\n" not in await consumer.metrics()


def _telemetry(gateway: str, seqs: range, device: str = "dev") -> bytes:
    readings = [{"seq": s, "ts": 1.0 + s, "sensor": "n", "value": s} for s in seqs]
    return json.dumps({"gateway": gateway, "device": device, "readings": readings}).encode()


@asynccontextmanager
async def running_consumer(
    broker_url: str, db: Path, source_options: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[Consumer]:
    """One consumer in this process, on an SQLite file: quick to start and to inspect."""
    url = f"sqlite://{db}"
    source = MqttSharedSource(
        SourceSettings([broker_url], instance="in-test", linger=0.01, **(source_options or {}))
    )
    landing = await open_landing(url)
    tables = await open_tables(url)
    consumer = Consumer(ConsumerSettings(source.settings, url, **settings), source, landing, tables)
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until(source.connected.is_set, timeout=10, message="consumer subscribed")
        yield consumer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tables.close()
        await landing.close()


def _publisher(broker: Mosquitto) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(10)


async def test_hostile_messages_are_parked_and_counted_and_the_stream_goes_on(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    db = tmp_path / "cloud.db"
    hostile = [
        b"\xff\xfe not even text",
        b"{not json",
        b"[1, 2, 3]",
        json.dumps({"gateway": 7, "device": "d", "readings": []}).encode(),
        json.dumps({"gateway": "gw", "device": "d", "readings": [{"seq": -1}]}).encode(),
        json.dumps({"gateway": "gw", "device": "d", "readings": [{"seq": True}]}).encode(),
        # Well formed for the consumer, refused by the landing (no value).
        json.dumps(
            {"gateway": "gw", "device": "d", "readings": [{"seq": 9, "ts": 1, "sensor": "n"}]}
        ).encode(),
    ]
    async with running_consumer(mosquitto.url, db) as consumer:
        client = _publisher(mosquitto)
        try:
            _publish(client, "edge/gw/dev/telemetry", _telemetry("gw", range(1, 4)))
            for payload in hostile:
                _publish(client, "edge/gw/dev/telemetry", payload)
            _publish(client, "edge/gw/dev/telemetry", _telemetry("gw", range(4, 6)))
        finally:
            client.loop_stop()
            client.disconnect()
        await wait_until(
            lambda: consumer.stats.messages == len(hostile) + 2, message="every message handled"
        )
        metrics = consumer.stats.render()
    assert consumer.stats.rows_landed == 5
    assert sum(consumer.stats.hostile.values()) == len(hostile)
    assert 'edge_consumer_hostile_messages_total{kind="not JSON"} 2' in metrics
    with closing(sqlite3.connect(db)) as conn:
        parked = conn.execute("SELECT body, reason FROM parked").fetchall()
    assert sorted(bytes(body) for body, _ in parked) == sorted(hostile)
    assert any(reason.startswith("refused: readings[0]: value") for _, reason in parked)
    assert sorted(await landed_bodies(f"sqlite://{db}", "gw")) == [1, 2, 3, 4, 5]


async def test_a_seq_hole_is_reported_and_asked_back_with_resend(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any
) -> None:
    commands: MqttSubscriber = subscriber_factory(mosquitto, "edge/+/cmd/resend")
    db = tmp_path / "cloud.db"
    async with running_consumer(
        mosquitto.url, db, gap_age=0.2, gap_check=0.1, resend_uplink="mqtt"
    ) as consumer:
        client = _publisher(mosquitto)
        try:
            _publish(client, "edge/gw-9/dev/telemetry", _telemetry("gw-9", range(1, 5)))
            _publish(client, "edge/gw-9/dev/telemetry", _telemetry("gw-9", range(8, 10)))
            await wait_until(lambda: bool(commands.messages()), message="a resend request")
            request = commands.messages()[0].json()
            assert request["args"] == {"uplink": "mqtt", "from_seq": 5, "to_seq": 7}
            assert commands.messages()[0].topic == "edge/gw-9/cmd/resend"
            assert consumer.stats.gaps_open == {"gw-9": 1}
            assert 'edge_consumer_seq_gaps_open{gateway="gw-9"} 1' in consumer.stats.render()
            # The gateway's answer: the missing readings, published again.
            _publish(client, "edge/gw-9/dev/telemetry", _telemetry("gw-9", range(5, 8)))
            await wait_until(lambda: consumer.stats.gaps_open == {}, message="the hole filled")
        finally:
            client.loop_stop()
            client.disconnect()
    with closing(sqlite3.connect(db)) as conn:
        gaps = conn.execute(
            "SELECT gateway, from_seq, to_seq, resend_requests, closed_at FROM gaps"
        ).fetchall()
    assert len(gaps) == 1
    gateway, first, last, requests, closed_at = gaps[0]
    assert (gateway, first, last) == ("gw-9", 5, 7)
    assert requests >= 1
    assert closed_at is not None


async def test_a_managed_broker_over_mutual_tls_with_a_password(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], tls_files: TlsFiles
) -> None:
    passwords = write_password_file(tmp_path / "passwd", {"cloud": "s3cret", "gw": "pw"})
    broker = mosquitto_factory(tls=tls_files, password_file=passwords)
    url = f"mqtts://cloud:s3cret@127.0.0.1:{broker.port}"
    db = tmp_path / "cloud.db"
    # The client certificate as AWS IoT Core wants one, and a password besides.
    tls: dict[str, Any] = {
        "ca_file": tls_files.ca,
        "cert_file": tls_files.client_cert,
        "key_file": tls_files.client_key,
    }
    async with running_consumer(url, db, tls) as consumer:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.tls_set(
            ca_certs=str(tls_files.ca),
            certfile=str(tls_files.client_cert),
            keyfile=str(tls_files.client_key),
        )
        client.username_pw_set("gw", "pw")
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            _publish(client, "edge/gw/dev/telemetry", _telemetry("gw", range(1, 4)))
        finally:
            client.loop_stop()
            client.disconnect()
        await wait_until(lambda: consumer.stats.rows_landed == 3, message="rows over TLS")


def test_bad_urls_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["consume", "--broker", "http://broker", "--db", "mysql://db"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--broker: give amqp:// URLs" in err
    assert "--db: expected sqlite://PATH or postgresql://" in err


def test_broker_urls_are_logged_without_their_password() -> None:
    assert without_password("amqp://edge:s3cret@rabbit-1:5672/") == "amqp://edge:***@rabbit-1:5672/"
    assert without_password("mqtt://127.0.0.1:1883") == "mqtt://127.0.0.1:1883"


async def test_instances_starting_together_all_open_the_database(postgres_url: str) -> None:
    # Each creates the tables where missing: the race between them must not stop any.
    opened = await asyncio.gather(*(open_database(postgres_url) for _ in range(4)))
    for landing, tables in opened:
        await tables.close()
        await landing.close()


@pytest.mark.timeout(60)
async def test_a_lost_range_is_filled_again_by_the_gateways_resend(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The whole loop with a real gateway: rows lost from the landing database are
    reported as a hole, asked back with `resend`, and sent again by the gateway."""
    db = tmp_path / "cloud.db"
    gateway_config = {
        "commands": {"allow": ["resend"], "max_per_second": 1000},
        # The log keeps what the uplink has sent, so that it can be sent again.
        "store": {"durability": "normal", "history": 3600},
    }
    async with (
        running_consumer(
            mosquitto.url, db, gap_age=0.2, gap_check=0.1, resend_uplink="cloud"
        ) as consumer,
        gateway_running(tmp_path, [uplink("cloud", mosquitto)], **gateway_config) as gateway,
    ):
        store = store_of(gateway)
        store.put_samples([Sample("thermo-1", "t", i, time.time()) for i in range(20)])
        await store.flush()

        async def landed(count: int) -> bool:
            return len(await landed_bodies(f"sqlite://{db}", GATEWAY)) == count

        await wait_until(lambda: landed(20), message="every reading landed")
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(
                "DELETE FROM readings WHERE gateway = ? AND seq BETWEEN 5 AND 9", (GATEWAY,)
            )
        await wait_until(lambda: landed(20), timeout=30, message="the lost range sent again")
        await wait_until(lambda: consumer.stats.gaps_open == {}, message="the hole closed")
    assert sorted(await landed_bodies(f"sqlite://{db}", GATEWAY)) == list(range(1, 21))
    with closing(sqlite3.connect(db)) as conn:
        gaps = conn.execute(
            "SELECT gateway, from_seq, to_seq, resend_requests, closed_at FROM gaps"
        ).fetchall()
    assert len(gaps) == 1
    assert gaps[0][:3] == (GATEWAY, 5, 9)
    assert gaps[0][3] >= 1
    assert gaps[0][4] is not None
