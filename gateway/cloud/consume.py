"""``edge-gateway consume``: the reference consumer, from the broker to the database.

Each batch of broker messages is checked (``telemetry.parse``), landed through the
exactly-once sink (``UNIQUE (gateway, seq)``, duplicates skipped), hostile messages
parked with their raw bytes, and only then acknowledged to the broker. A consumer
killed at any point loses nothing: what it had not acknowledged is delivered again,
and what it had already committed is skipped as a duplicate.

Beside the stream, a watcher asks the database for seq holes per gateway; a hole
still open after ``--gap-age`` seconds is reported (the ``gaps`` table and the
``edge_consumer_seq_gaps_open`` metric) and, with ``--resend-uplink``, asked back
from the gateway with its ``resend`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import signal
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from gateway.cloud.consumer_metrics import ConsumerStats, serve_metrics
from gateway.cloud.consumer_tables import ConsumerTables, open_tables
from gateway.cloud.landing import BadReading, Gap, Landing, LandingError, open_landing
from gateway.cloud.sources import Delivery, Source, SourceSettings, make_source
from gateway.cloud.telemetry import HostileMessage, Telemetry, parse
from gateway.config import parse_listen
from gateway.errors import ConfigError, ConfigProblem
from gateway.logs import setup_logging

log = logging.getLogger(__name__)

DATABASE_SCHEMES = ("sqlite://", "postgresql://", "postgres://")
GapKey = tuple[str, int, int]  # gateway, first missing seq, last missing seq


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    source: SourceSettings
    db_url: str
    metrics_listen: str | None = None
    gap_age: float = 60.0
    gap_check: float = 5.0
    resend_uplink: str | None = None  # the gateway uplink that carries telemetry here


def _gap_key(gap: Gap) -> GapKey:
    return (gap.gateway, gap.after + 1, gap.before - 1)


@dataclass
class Consumer:
    """One instance: the source's batches into the landing, the gap watcher beside it."""

    settings: ConsumerSettings
    source: Source
    landing: Landing
    tables: ConsumerTables
    stats: ConsumerStats = field(default_factory=ConsumerStats)
    # Holes reported and still open -> when the gateway was last asked for them.
    _open_gaps: dict[GapKey, float] = field(default_factory=dict)

    async def handle(self, batch: list[Delivery]) -> None:
        """Land one batch and park its hostile messages; returns once both are committed."""
        by_gateway: dict[str, list[tuple[Delivery, Telemetry]]] = defaultdict(list)
        parked: list[tuple[bytes, str]] = []
        for delivery in batch:
            try:
                message = parse(delivery.body)
            except HostileMessage as exc:
                parked.append((delivery.body, str(exc)))
                continue
            by_gateway[message.gateway].append((delivery, message))
        try:
            new, total = await self._land(by_gateway, parked)
            if parked:
                await self.tables.park(parked)
        except LandingError:
            self.stats.database_errors += 1
            raise
        self.stats.messages += len(batch)
        self.stats.batches += 1
        self.stats.rows_landed += new
        self.stats.rows_duplicate += total - new
        for _body, reason in parked:
            self.stats.hostile[reason.split(":", 1)[0]] += 1
            log.warning("consumer: parked a message that is not telemetry: %s", reason)

    async def _land(
        self,
        by_gateway: dict[str, list[tuple[Delivery, Telemetry]]],
        parked: list[tuple[bytes, str]],
    ) -> tuple[int, int]:
        """(rows new, rows given): every gateway's messages in one transaction if all
        are good (one transaction per gateway was the consumer's cost)."""
        readings = {
            gateway: [reading for _delivery, message in messages for reading in message.readings]
            for gateway, messages in by_gateway.items()
        }
        try:
            new = await self.landing.land_many(readings)
            return new, sum(len(batch) for batch in readings.values())
        except BadReading:
            pass
        # One reading the landing refuses must not hold back the good messages
        # beside it: land them one by one and park the bad one.
        new = total = 0
        for messages in by_gateway.values():
            for delivery, message in messages:
                try:
                    new += await self.landing.land(message.gateway, message.readings)
                    total += len(message.readings)
                except BadReading as exc:
                    parked.append((delivery.body, f"refused: {exc}"))
        return new, total

    async def check_gaps(self, now: float) -> None:
        """Report holes open longer than the gap age; ask for them again where configured."""
        current = {_gap_key(gap) for gap in await self.landing.gaps(self.settings.gap_age)}
        for key in [key for key in self._open_gaps if key not in current]:
            del self._open_gaps[key]
            await self.tables.close_gap(*key)
            log.info("consumer: gateway %s seq %d..%d filled", *key)
        for key in sorted(current - self._open_gaps.keys()):
            self._open_gaps[key] = -math.inf
            self.stats.gaps_reported += 1
            await self.tables.record_gap(*key)
            log.warning("consumer: gateway %s is missing seq %d..%d", *key)
        counts: dict[str, int] = defaultdict(int)
        for gateway, _first, _last in self._open_gaps:
            counts[gateway] += 1
        self.stats.gaps_open = dict(counts)
        if self.settings.resend_uplink is None:
            return
        for key, asked in list(self._open_gaps.items()):
            # Asked again at most once per gap age: a resend takes its time.
            if now - asked >= self.settings.gap_age:
                self._open_gaps[key] = now
                await self._request_resend(key)

    async def _request_resend(self, key: GapKey) -> None:
        gateway, first, last = key
        # A fresh id per request: the gateway runs a request id once only, and a
        # hole still open after an earlier request needs the command to run again.
        request = {
            "id": f"resend-{gateway}-{first}-{last}-{uuid.uuid4().hex[:12]}",
            "args": {"uplink": self.settings.resend_uplink, "from_seq": first, "to_seq": last},
        }
        topic = f"{self.settings.source.topic_prefix}/{gateway}/cmd/resend"
        try:
            await self.source.publish(topic, json.dumps(request).encode())
        except (ConnectionError, OSError, TimeoutError) as exc:
            self.stats.resend_failures += 1
            log.warning("consumer: resend request to %s not sent: %s", gateway, exc)
            return
        self.stats.resend_requests += 1
        await self.tables.resend_requested(*key)

    async def watch_gaps(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gap_check)
            try:
                await self.check_gaps(time.time())
            except LandingError as exc:
                log.warning("consumer: gap check failed: %s", exc)

    async def watch_connection(self) -> None:
        """Mirror the source's connection into the metrics (and /healthz)."""
        while True:
            self.stats.connected = self.source.connected.is_set()
            await asyncio.sleep(0.2)

    async def run(self) -> None:
        runner = None
        if self.settings.metrics_listen is not None:
            host, port = parse_listen(self.settings.metrics_listen)
            runner = await serve_metrics(self.stats, host, port)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.source.run(self.handle), name="consumer-source")
                tasks.create_task(self.watch_gaps(), name="consumer-gaps")
                tasks.create_task(self.watch_connection(), name="consumer-connection")
        finally:
            if runner is not None:
                await runner.cleanup()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        action="append",
        required=True,
        metavar="URL",
        help="amqp://user:pass@host:port/ of a RabbitMQ node (repeat for each node of the "
        "cluster), or one mqtt://host:port (mosquitto: MQTT 5 shared subscription)",
    )
    parser.add_argument(
        "--db", required=True, metavar="URL", help="postgresql://… or sqlite:///path"
    )
    parser.add_argument(
        "--group", default="edge-consumers", help="consumer group: instances sharing the load"
    )
    parser.add_argument(
        "--instance",
        default=socket.gethostname(),
        help="this instance's name in the group, stable across restarts (default: host name)",
    )
    parser.add_argument("--topic-prefix", default="edge", help="the gateways' topic_prefix")
    parser.add_argument("--batch-max", type=int, default=2000, help="messages per commit")
    parser.add_argument(
        "--linger",
        type=float,
        default=0.25,
        help="seconds a batch waits for more messages: each gateway in a batch costs one "
        "transaction, so fuller batches land more rows per transaction",
    )
    parser.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help="serve /metrics and /healthz here"
    )
    parser.add_argument(
        "--gap-age", type=float, default=60.0, help="seconds before a seq hole is reported"
    )
    parser.add_argument(
        "--gap-check", type=float, default=5.0, help="seconds between two gap checks"
    )
    parser.add_argument(
        "--resend-uplink",
        metavar="NAME",
        help="ask gateways to resend holes on this uplink (their `resend` command)",
    )
    for key, what in (
        ("ca-file", "the broker's CA for mqtts:// (default: the system's CAs)"),
        ("cert-file", "a client certificate for mqtts:// (AWS IoT Core wants one)"),
        ("key-file", "the client certificate's key"),
    ):
        parser.add_argument(f"--{key}", type=Path, metavar="PATH", help=what)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])


STARTUP_ATTEMPTS = 5


async def open_database(url: str) -> tuple[Landing, ConsumerTables]:
    """The landing and the consumer's tables, created where missing.

    Instances started together race on ``CREATE TABLE IF NOT EXISTS``: PostgreSQL
    checks for the name before it takes the lock, so the loser fails with a unique
    violation on its catalog. The table exists by then; the loser tries again.
    """
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        try:
            landing = await open_landing(url)
            try:
                return landing, await open_tables(url)
            except LandingError:
                await landing.close()
                raise
        except LandingError as exc:
            if attempt == STARTUP_ATTEMPTS:
                raise
            log.warning("consumer: opening the database failed (%s); again", exc)
            await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


async def _main(settings: ConsumerSettings, source: Source) -> None:
    landing, tables = await open_database(settings.db_url)
    try:
        consumer = Consumer(settings, source, landing, tables)
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.run()
    finally:
        await tables.close()
        await landing.close()


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    source = SourceSettings(
        urls=args.broker,
        topic_prefix=args.topic_prefix,
        group=args.group,
        instance=args.instance,
        batch_max=args.batch_max,
        linger=args.linger,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
    )
    settings = ConsumerSettings(
        source=source,
        db_url=args.db,
        metrics_listen=args.metrics_listen,
        gap_age=args.gap_age,
        gap_check=args.gap_check,
        resend_uplink=args.resend_uplink,
    )
    problems: list[ConfigProblem] = []
    try:
        broker = make_source(source)
    except ValueError as exc:
        problems.append(ConfigProblem("--broker", str(exc)))
    if not args.db.startswith(DATABASE_SCHEMES):
        problems.append(ConfigProblem("--db", "expected sqlite://PATH or postgresql://…"))
    if args.metrics_listen is not None:
        try:
            parse_listen(args.metrics_listen)
        except ValueError as exc:
            problems.append(ConfigProblem("--metrics-listen", str(exc)))
    if problems:
        raise ConfigError(problems)
    asyncio.run(_main(settings, broker))
    return 0
