"""Consumer throughput: rows/s landed in PostgreSQL with dedupe, through the clustered broker.

One run on this machine, everything private and on loopback:

1. baseline: the same rows written straight into PostgreSQL with ``COPY`` into a
   table without a key (no broker, no dedupe): the fastest way rows get in;
2. the landing alone (``gateway/cloud/landing.py``: ``COPY`` into a staging table,
   then ``INSERT … SELECT … ON CONFLICT DO NOTHING``), no broker, fed the messages in
   batches of ``CONSUMER_BATCH`` as a consumer takes them from the queue: once with a
   transaction per gateway per batch (``land``, what the consumer did before), once
   with one transaction per batch (``land_many``, what it does now);
3. the broker: the rows as gateway messages (``{"gateway", "device", "readings"}``,
   ``READINGS_PER_MESSAGE`` each, from ``GATEWAYS`` gateways), published MQTT 3.1.1
   QoS 1 through one node of a 3-node RabbitMQ cluster into the consumers' quorum
   queue, a share of them twice (the duplicates a reconnect makes); the figure is
   PUBACKed messages/s through that node;
4. the consumer: two ``edge-gateway consume`` instances drain the queue into
   PostgreSQL; rows/s = rows / (last row landed - first row landed), polled in the
   database. Then every (gateway, seq) must be there once.

    python -m benchmarks consumer [--quick]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from typing import Any

import aio_pika
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.harness import BenchError, scratch_dir
from benchmarks.plan import Plan
from benchmarks.report import BenchResult, Figure
from gateway.cloud.landing import open_landing
from gateway.cloud.sources import SourceSettings, declare_telemetry_queue
from tests.support.cluster import RabbitCluster
from tests.support.consumer_proc import ConsumerProcess
from tests.support.postgres import Postgres

GATEWAYS = 200
READINGS_PER_MESSAGE = 20  # a gateway catching up after a short outage
DUPLICATE_SHARE = 0.05  # messages published twice
PUBLISHERS = 4  # MQTT connections publishing in parallel
TARGET_ROWS_PER_SECOND = 50_000.0
CONSUMER_BATCH = 100  # messages per batch in the landing-alone runs, as seen in the consumer

Message = tuple[str, bytes]  # topic, payload


def make_messages(rows: int) -> tuple[list[Message], list[tuple[Any, ...]]]:
    """The rows as gateway messages, and as table rows for the COPY baseline."""
    per_gateway = rows // GATEWAYS
    messages: list[Message] = []
    table: list[tuple[Any, ...]] = []
    now = time.time()
    # In time order, as a live fleet publishes: each gateway's next message in turn.
    for first in range(1, per_gateway + 1, READINGS_PER_MESSAGE):
        for g in range(GATEWAYS):
            gateway = f"gw-{g:03d}"
            last = min(first + READINGS_PER_MESSAGE - 1, per_gateway)
            readings = [
                {"seq": s, "ts": now + s * 0.5, "device": "dev-1", "sensor": "t", "value": 20.5}
                for s in range(first, last + 1)
            ]
            body = {"gateway": gateway, "device": "dev-1", "readings": readings}
            messages.append((f"edge/{gateway}/dev-1/telemetry", json.dumps(body).encode()))
            for r in readings:
                table.append((gateway, r["seq"], r["ts"], "dev-1", "t", "20.5", json.dumps(r), now))
    return messages, table


def copy_baseline(url: str, table: list[tuple[Any, ...]]) -> float:
    """Rows/s of a plain COPY into a table with no key."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE plain (gateway text, seq bigint, ts float8, device text,"
            " sensor text, value text, body text, received_at float8)"
        )
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy("COPY plain FROM STDIN") as copy:
            for row in table:
                copy.write_row(row)
        conn.commit()
        return len(table) / (time.perf_counter() - started)


async def landing_alone(url: str, messages: list[Message], per_gateway: bool) -> float:
    """Rows/s of the landing with dedupe, fed batches of messages as a consumer takes
    them, no broker: a transaction per gateway per batch, or one per batch."""
    landing = await open_landing(url)
    try:
        batches: list[dict[str, list[dict[str, Any]]]] = []
        for start in range(0, len(messages), CONSUMER_BATCH):
            batch: dict[str, list[dict[str, Any]]] = {}
            for _topic, payload in messages[start : start + CONSUMER_BATCH]:
                body = json.loads(payload)
                batch.setdefault(body["gateway"], []).extend(body["readings"])
            batches.append(batch)
        rows = sum(len(readings) for batch in batches for readings in batch.values())
        started = time.perf_counter()
        for batch in batches:
            if per_gateway:
                # As the consumer did: the gateways' transactions side by side.
                async with asyncio.TaskGroup() as tasks:
                    for gateway, readings in batch.items():
                        tasks.create_task(landing.land(gateway, readings))
            else:
                await landing.land_many(batch)
        return rows / (time.perf_counter() - started)
    finally:
        await landing.close()


async def create_table(url: str) -> None:
    landing = await open_landing(url)
    await landing.close()


async def declare_queue(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await declare_telemetry_queue(channel, SourceSettings([amqp_url]))


def publish(host: str, port: int, messages: list[Message]) -> float:
    """Messages/s PUBACKed by one node, over ``PUBLISHERS`` connections."""

    def one(client_id: str, share: list[Message]) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(200)
        client.max_queued_messages_set(0)
        client.connect(host, port)
        client.loop_start()
        try:
            infos = [client.publish(topic, payload, qos=1) for topic, payload in share]
            for info in infos:
                info.wait_for_publish(120)
                if not info.is_published():
                    raise BenchError(f"{client_id}: a publish was not acknowledged")
        finally:
            client.loop_stop()
            client.disconnect()

    shares = [messages[i::PUBLISHERS] for i in range(PUBLISHERS)]
    threads = [
        threading.Thread(target=one, args=(f"bench-pub-{i}", share))
        for i, share in enumerate(shares)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(messages) / (time.perf_counter() - started)


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0


def drain(url: str, rows: int, timeout: float) -> tuple[float, int]:
    """Seconds from the first row landed to the last, and the rows there at the end."""
    deadline = time.monotonic() + timeout
    first: float | None = None
    landed = 0
    while landed < rows:
        if time.monotonic() > deadline:
            raise BenchError(f"consumers landed {landed} of {rows} rows in {timeout}s")
        landed = count_rows(url)
        if landed and first is None:
            first = time.monotonic()
        time.sleep(0.05)
    assert first is not None
    return time.monotonic() - first, landed


def run_consumer(plan: Plan) -> BenchResult:
    rows = 400_000 if plan.name == "full" else 100_000
    result = BenchResult("consumer")
    workdir = scratch_dir("consumer")
    postgres = Postgres()
    cluster = RabbitCluster(workdir / "rabbit")
    consumers: list[ConsumerProcess] = []
    try:
        postgres.start()
        for database in ("baseline", "alone", "alone_batch", "consumer"):
            postgres.psql(f"CREATE DATABASE {database}")
        boot = time.monotonic()
        cluster.start()
        boot_seconds = time.monotonic() - boot

        messages, table = make_messages(rows)
        rows = len(table)
        copy_rate = copy_baseline(postgres.url("baseline"), table)
        alone_rate = asyncio.run(landing_alone(postgres.url("alone"), messages, True))
        batch_rate = asyncio.run(landing_alone(postgres.url("alone_batch"), messages, False))

        asyncio.run(declare_queue(cluster.nodes[1].amqp_url))
        duplicates = messages[:: int(1 / DUPLICATE_SHARE)]
        node = cluster.nodes[0]
        publish_rate = publish("127.0.0.1", node.mqtt_port, messages + duplicates)

        brokers = [cluster.nodes[i].amqp_url for i in (1, 2, 0)]
        url = postgres.url("consumer")
        asyncio.run(create_table(url))  # polled before the consumers have started
        consumers = [
            ConsumerProcess(workdir / "consumers", brokers, url, name) for name in ("a", "b")
        ]
        for consumer in consumers:
            consumer.start()
        seconds, landed = drain(url, rows, timeout=600)
        consumer_rate = rows / seconds
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) - count(DISTINCT (gateway, seq)) FROM readings"
            ).fetchone()
            duplicate_rows = int(row[0]) if row else -1
    finally:
        for consumer in consumers:
            consumer.stop()
        cluster.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    bench = "consumer"
    result.figures = [
        Figure(
            bench,
            "consumer rows/s landed with dedupe (2 instances, 3-node RabbitMQ)",
            "rows/s",
            consumer_rate,
            target=TARGET_ROWS_PER_SECOND,
            goal="min",
            baseline=copy_rate,
            note="baseline: COPY of the same rows, no broker, no key",
        ),
        Figure(
            bench,
            "landing alone rows/s, a transaction per gateway per batch (land)",
            "rows/s",
            alone_rate,
            baseline=copy_rate,
        ),
        Figure(
            bench,
            "landing alone rows/s, one transaction per batch (land_many)",
            "rows/s",
            batch_rate,
            baseline=alone_rate,
            note="baseline: a transaction per gateway per batch, as the consumer did",
        ),
        Figure(
            bench,
            "MQTT QoS 1 publishes/s PUBACKed by one node (quorum queue)",
            "msg/s",
            publish_rate,
        ),
        Figure(
            bench, "duplicate rows after redelivered messages", "rows", duplicate_rows, 0, "max"
        ),
        Figure(bench, "3-node cluster boot", "s", boot_seconds),
    ]
    result.details = {
        "rows": rows,
        "landed": landed,
        "gateways": GATEWAYS,
        "readings_per_message": READINGS_PER_MESSAGE,
        "messages": len(messages),
        "duplicate_messages": len(duplicates),
        "publishers": PUBLISHERS,
        "landing_alone_batch_messages": CONSUMER_BATCH,
        "postgres": "private server, fsync off (tests/support/postgres.py)",
    }
    result.notes = [
        f"{len(messages) + len(duplicates):,} messages of {READINGS_PER_MESSAGE} readings "
        f"from {GATEWAYS} gateways; consumers drained a preloaded queue in {seconds:.1f}s"
    ]
    return result
