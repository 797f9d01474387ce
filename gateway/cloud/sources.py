"""Where the consumer reads telemetry: the engine's own consumer group, per broker kind.

- ``amqp://`` URLs (RabbitMQ with its MQTT plugin): one durable quorum queue bound
  to ``amq.topic`` for ``{prefix}/+/+/telemetry``; every instance consumes from it
  (competing consumers), so the queue splits the load. The queue is replicated by
  Raft over the cluster, and a gateway's PUBACK only leaves RabbitMQ once the
  queue confirmed the message (docs/fleet.md).
- ``mqtt://`` URLs (mosquitto, the single-node default): an MQTT 5 shared
  subscription ``$share/{group}/{prefix}/+/+/telemetry`` under a persistent
  session, so the broker splits the messages among the group's instances and
  keeps a killed instance's unacknowledged ones for its return.

Both deliver batches to one handler and acknowledge a batch only after the
handler returned, that is after the database committed it. A handler that raises
(database down) leaves the batch unacknowledged: the source drops the connection,
so the broker delivers those messages again, and reconnects after a backoff.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.cloud.landing import LandingError
from gateway.uplinks.broker import BrokerAddress

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One broker message: its body, and what the source needs to acknowledge it."""

    body: bytes
    tag: Any


Handler = Callable[[list[Delivery]], Awaitable[None]]

# What a lost node or connection raises in aio-pika: OSError covers ConnectionError,
# and a channel closed under a pending call raises ChannelInvalidStateError (a
# RuntimeError).
AMQP_FAILURES = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class SourceSettings:
    urls: Sequence[str]
    topic_prefix: str = "edge"
    group: str = "edge-consumers"
    instance: str = "consumer-1"
    batch_max: int = 2000
    linger: float = 0.25
    prefetch: int = 4000
    reconnect_min: float = 0.2
    reconnect_max: float = 5.0
    # mqtts:// on a managed broker: its CA (None: the system's) and a client certificate.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class Source(Protocol):
    connected: asyncio.Event

    async def run(self, handle: Handler) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...


async def _gather(inbox: asyncio.Queue[Delivery], batch_max: int, linger: float) -> list[Delivery]:
    """The next batch: everything waiting, then what arrives within ``linger``, up to a cap."""
    batch = [await inbox.get()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + linger
    while len(batch) < batch_max:
        try:
            batch.append(inbox.get_nowait())
            continue
        except asyncio.QueueEmpty:
            pass
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                batch.append(await inbox.get())
        except TimeoutError:
            break
    return batch


def without_password(url: str) -> str:
    """``url`` fit for a log line: its password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def amqp_routing_key(topic: str) -> str:
    """An MQTT topic as RabbitMQ's MQTT plugin routes it: '/' and '.' swap places."""
    return topic.translate(str.maketrans("/.", "./"))


async def declare_telemetry_queue(
    channel: aio_pika.abc.AbstractChannel, settings: SourceSettings
) -> aio_pika.abc.AbstractQueue:
    """The group's quorum queue, bound to every gateway's telemetry topic.

    It must exist before gateways publish: RabbitMQ confirms (and so PUBACKs) a
    message no queue is bound for, and drops it.
    """
    queue = await channel.declare_queue(
        f"{settings.group}.telemetry", durable=True, arguments={"x-queue-type": "quorum"}
    )
    topic = f"{settings.topic_prefix}/+/+/telemetry"
    await queue.bind("amq.topic", routing_key=amqp_routing_key(topic).replace("+", "*"))
    return queue


class AmqpSource:
    """Competing consumers on one quorum queue, failing over across the cluster's nodes."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.connected = asyncio.Event()
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def run(self, handle: Handler) -> None:
        backoff = self.settings.reconnect_min
        for url in itertools.cycle(self.settings.urls):
            try:
                await self._session(url, handle)
            except AMQP_FAILURES as exc:
                node = without_password(url)
                log.warning("consumer: broker %s lost (%s); next node in %.1fs", node, exc, backoff)
            except LandingError as exc:
                # Dropping the connection hands the unacknowledged batch back to the queue.
                log.warning("consumer: database failed (%s); reconnecting in %.1fs", exc, backoff)
            finally:
                if self.connected.is_set():  # it had worked: start low again
                    backoff = self.settings.reconnect_min
                self.connected.clear()
                self._exchange = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max)

    async def _session(self, url: str, handle: Handler) -> None:
        settings = self.settings
        connection = await aio_pika.connect(url, timeout=10)
        async with connection:
            lost = asyncio.Event()

            def on_close(_connection: object, _reason: object) -> None:
                lost.set()

            connection.close_callbacks.add(on_close)
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=settings.prefetch)
            queue = await declare_telemetry_queue(channel, settings)
            self._exchange = await channel.get_exchange("amq.topic")
            inbox: asyncio.Queue[Delivery] = asyncio.Queue()

            async def deliver(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                inbox.put_nowait(Delivery(message.body, message))

            await queue.consume(deliver, no_ack=False)
            self.connected.set()
            log.info("consumer: reading %s on %s", queue.name, without_password(url))
            await self._consume(inbox, handle, lost)
            raise ConnectionError("connection closed")

    async def _consume(
        self, inbox: asyncio.Queue[Delivery], handle: Handler, lost: asyncio.Event
    ) -> None:
        settings = self.settings
        while not lost.is_set():
            gather = asyncio.ensure_future(_gather(inbox, settings.batch_max, settings.linger))
            stop = asyncio.ensure_future(lost.wait())
            waiting: list[asyncio.Future[Any]] = [gather, stop]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not gather.done():
                gather.cancel()
                return
            batch = gather.result()
            await handle(batch)
            # Deliveries arrive in tag order and batches take them in order: one
            # multiple-ack of the last settles the whole batch, nothing after it.
            last: aio_pika.abc.AbstractIncomingMessage = batch[-1].tag
            await last.ack(multiple=True)

    async def publish(self, topic: str, payload: bytes) -> None:
        if self._exchange is None:
            raise ConnectionError("not connected")
        message = aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        try:
            await self._exchange.publish(message, routing_key=amqp_routing_key(topic))
        except AMQP_FAILURES as exc:
            raise ConnectionError(f"publish failed: {exc}") from exc


class MqttSharedSource:
    """An MQTT 5 shared subscription under a persistent session, acknowledged by hand."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.address = BrokerAddress.parse(settings.urls[0])
        self.connected = asyncio.Event()
        self._client: mqtt.Client | None = None

    def _make_client(
        self, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[Delivery]
    ) -> mqtt.Client:
        settings = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{settings.group}-{settings.instance}",
            protocol=mqtt.MQTTv5,
        )
        url = urlsplit(settings.urls[0])
        if url.username is not None:
            client.username_pw_set(unquote(url.username), unquote(url.password or "") or None)
        if self.address.tls:
            context = ssl.create_default_context(
                cafile=None if settings.ca_file is None else str(settings.ca_file)
            )
            if settings.cert_file is not None:
                context.load_cert_chain(settings.cert_file, settings.key_file)
            client.tls_set_context(context)
        client.manual_ack_set(True)
        client.max_inflight_messages_set(1000)
        topic = f"$share/{settings.group}/{settings.topic_prefix}/+/+/telemetry"

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
            if reason.is_failure:
                log.warning(
                    "consumer: broker %s refused the connection: %s", self.address.host, reason
                )
                return
            c.subscribe(topic, qos=1)
            loop.call_soon_threadsafe(self.connected.set)

        def on_disconnect(_c: mqtt.Client, _u: object, _f: object, _r: object, _p: object) -> None:
            loop.call_soon_threadsafe(self.connected.clear)

        def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            delivery = Delivery(bytes(message.payload), (message.mid, message.qos))
            loop.call_soon_threadsafe(inbox.put_nowait, delivery)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.reconnect_delay_set(
            min_delay=max(1, int(settings.reconnect_min)),
            max_delay=int(settings.reconnect_max) or 1,
        )
        return client

    async def run(self, handle: Handler) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        client = self._make_client(loop, inbox)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # The session outlives a crash: the broker keeps this instance's share of
        # unacknowledged messages until it reconnects under the same name.
        properties.SessionExpiryInterval = 7 * 24 * 3600
        properties.ReceiveMaximum = min(self.settings.prefetch, 65535)
        client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=15,
            clean_start=False,
            properties=properties,
        )
        client.loop_start()
        self._client = client
        try:
            while True:
                batch = await _gather(inbox, self.settings.batch_max, self.settings.linger)
                await self._handle_until_committed(handle, batch)
                for delivery in batch:
                    mid, qos = delivery.tag
                    client.ack(mid, qos)
        finally:
            self._client = None
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    async def _handle_until_committed(self, handle: Handler, batch: list[Delivery]) -> None:
        """The broker keeps the batch unacknowledged meanwhile; the database comes back."""
        backoff = self.settings.reconnect_min
        while True:
            try:
                await handle(batch)
            except LandingError as exc:
                log.warning("consumer: database failed (%s); again in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max)
            else:
                return

    async def publish(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None or not self.connected.is_set():
            raise ConnectionError("not connected")
        info = client.publish(topic, payload, qos=1)
        try:
            # paho raises RuntimeError when the connection drops before the PUBACK,
            # ValueError when its queue refused the message.
            await asyncio.to_thread(info.wait_for_publish, 10)
        except (RuntimeError, ValueError) as exc:
            raise ConnectionError(f"publish failed: {exc}") from exc
        if not info.is_published():
            raise ConnectionError("publish not acknowledged within 10 s")


def make_source(settings: SourceSettings) -> Source:
    schemes = {url.split("://", 1)[0] for url in settings.urls}
    if schemes <= {"amqp", "amqps"}:
        return AmqpSource(settings)
    if schemes <= {"mqtt", "mqtts"} and len(settings.urls) == 1:
        return MqttSharedSource(settings)
    raise ValueError("give amqp:// URLs (one per RabbitMQ node) or one mqtt:// or mqtts:// URL")
