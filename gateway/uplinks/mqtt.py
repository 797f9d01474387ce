"""The MQTT uplink: delivers the reading log to a broker, at least once.

One consumer of the log (durable cursor = the uplink's name). It reads after
the cursor, publishes per-device telemetry messages at QoS 1 in a bounded
window, and moves the cursor only over readings the broker acknowledged with a
success code (or refused for good, see below), in seq order. On any
disconnect it re-reads from the cursor: duplicates are possible, loss is not.

The connection is an explicit state machine:
``connecting -> connected -> backoff -> connecting ...``, ``stopped`` at the end,
with capped exponential backoff and jitter chosen by the kind of failure.
``docs/mqtt.md`` describes topics, payloads, reason codes and TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from gateway.commands.mqtt import MAX_INBOUND_PACKET, MqttCommandChannel
from gateway.errors import StoreClosedError, StoreError, UplinkError
from gateway.interfaces import Commands, ReadingLog, SampleSink, UplinkStatus
from gateway.rate import TokenBucket
from gateway.reading import DeadLetter, StoredReading
from gateway.retry import Backoff, Failure, retry_delay
from gateway.settings import DeviceSettings, MqttSettings, UplinkStart
from gateway.uplinks.batching import MQTT_MAX_PACKET, Batch, TelemetryMessage, TelemetryPlanner
from gateway.uplinks.broker import BrokerAddress, load_credentials
from gateway.uplinks.home_assistant import HomeAssistant
from gateway.uplinks.lanes import Lane, lanes_for, register_lanes, split_in_flight
from gateway.uplinks.paho_async import ConnectOptions, MqttConnection, MqttFailure
from gateway.uplinks.route import PriorityRules, Selection
from gateway.uplinks.window import InFlightWindow

log = logging.getLogger(__name__)

# PUBACK codes that will not change however often the same message is sent.
REFUSED_FOR_GOOD = frozenset({0x90, 0x95, 0x99})  # topic invalid, too large, bad payload
NOT_AUTHORIZED = 0x87
CONNECT_TIMEOUT = 10.0
# Messages' worth of committed readings kept from the commit listener; an uplink
# further behind reads the log instead.
TAIL_MESSAGES = 2
# Messages' worth of readings per read of the log. Several, so that devices sharing
# the log still fill their messages; not a whole window (32 by default), which made a
# drain hold three copies of 16,000 readings at once (59 MiB RSS instead of 50).
READ_MESSAGES = 4
# A resend reads and sends this many messages' worth at a time, and waits for each
# such part's PUBACKs before the next.
RESEND_MESSAGES = 4
# How long a resend waits for the PUBACKs of one part.
RESEND_TIMEOUT = 30.0


class MqttUplink:
    """Implements ``gateway.interfaces.Uplink`` over MQTT 5 or 3.1.1.

    ``dead_letters``: where readings the broker refuses for good go (the
    store). Without it such readings are retried like any other failure, so
    they are never lost, but they hold the cursor back until the broker
    accepts them.

    ``selection``: the devices it carries and which readings go in its priority
    lane (default: every device, no priority). ``best_effort``: retention does not
    wait for it. ``start``: where its cursor starts when it does not exist yet.
    """

    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        log: ReadingLog,
        name: str = "mqtt",
        dead_letters: SampleSink | None = None,
        *,
        commands: Commands | None = None,
        selection: Selection | None = None,
        best_effort: bool = False,
        start: UplinkStart = "oldest",
        devices: Callable[[], Sequence[DeviceSettings]] = tuple,
    ) -> None:
        self.name = name
        self.best_effort = best_effort
        self.start = start
        self.status = UplinkStatus()
        self.settings = settings
        self.gateway_id = gateway_id
        self.log = log
        self.dead_letters = dead_letters
        try:
            self.address = BrokerAddress.parse(settings.url)
        except ValueError as err:
            raise UplinkError(name, f"url: {err}") from err
        # Two uplinks to one broker must not share a client id (each would cut the
        # other's session); the uplink named "mqtt" ([uplink.mqtt]) keeps the plain one.
        default_id = f"edge-gateway-{gateway_id}" + ("" if name == "mqtt" else f"-{name}")
        self.client_id = settings.client_id or default_id
        self.status_topic = f"{settings.topic_prefix}/{gateway_id}/status"
        # Requests from the cloud arrive on this uplink's connection (docs/commands.md).
        self._commands = (
            None
            if commands is None
            else MqttCommandChannel(commands, settings.topic_prefix, gateway_id)
        )
        # Home Assistant discovery and set topics (docs/mqtt.md), when asked for: of the
        # devices this uplink carries.
        carried = (selection or Selection(("*",), PriorityRules())).carries_device
        self._home_assistant = (
            HomeAssistant(
                settings,
                gateway_id,
                lambda: [d for d in devices() if carried(d.id)],
                commands,
            )
            if settings.home_assistant
            else None
        )
        self._planner = TelemetryPlanner(gateway_id, settings.topic_prefix, settings.batch_max)
        self._rate = (
            TokenBucket(settings.max_messages_per_second)
            if settings.max_messages_per_second > 0
            else None
        )
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        # The lanes it reads the log in: the priority lane (if any) first.
        self._lanes = lanes_for(name, selection, TAIL_MESSAGES * settings.batch_max)
        # The connection while one is up: `resend` publishes on it.
        self._connection: MqttConnection | None = None
        self._windows: list[InFlightWindow] = []
        # A "not authorized" PUBACK seen on the current connection.
        self._refusal: str | None = None
        self._acknowledged_on_connection = False

    async def run(self) -> None:
        # Each lane's commit listener keeps the newest readings it carries, so a
        # caught-up uplink need not read the log.
        for lane in self._lanes:
            lane.start(self.log.last_seq)
            self.log.add_listener(lane.on_commit)
        try:
            await self._run()
        finally:
            for lane in self._lanes:
                self.log.remove_listener(lane.on_commit)
            if self._commands is not None:
                await self._commands.close()
            if self._home_assistant is not None:
                await self._home_assistant.close()

    async def _register(self) -> None:
        await register_lanes(
            self.log, self._lanes, start_now=self.start == "now", best_effort=self.best_effort
        )
        self._update_acked()

    async def _run(self) -> None:
        await self._register()
        self.status.disconnected_since = time.time()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-connect")
        store_open = True
        try:
            async with asyncio.TaskGroup() as tg:
                ackers = [
                    tg.create_task(self._ack_loop(lane), name=f"{lane.cursor}-ack")
                    for lane in self._lanes
                ]
                try:
                    await self._connect_loop(executor)
                except* StoreClosedError:
                    # The gateway is shutting down and closed the log first. It may come
                    # grouped with what else the connection's tasks raised meanwhile.
                    log.info("%s: the store is closed; stopping", self.name)
                    store_open = False
                    for acker in ackers:
                        acker.cancel()
        finally:
            executor.shutdown(wait=False)
            self.status.state = "stopped"
            if store_open:
                for lane in self._lanes:
                    await self._ack_now(lane)

    # Connection state machine.

    async def _connect_loop(self, executor: Executor) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max, rng=self._rng)
        while True:
            self.status.state = "connecting"
            try:
                async with self._scouting():
                    connection = await self._open(executor)
            except MqttFailure as refused:
                failure = refused
            else:
                failure = await self._session(connection)
                # Only a connection the broker acknowledged something on counts
                # as working: one dropped right after CONNACK keeps backing off.
                if self._acknowledged_on_connection:
                    backoff.reset()
            self._record_error(failure.detail)
            delay = backoff.delay(failure.kind)
            self.status.state = "backoff"
            log.info("%s: next connection attempt in %.1fs", self.name, delay)
            async with self._scouting():
                await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def _scouting(self) -> AsyncIterator[None]:
        """While there is no connection, the priority lane follows the log (``_scout``)."""
        scouts = [
            asyncio.create_task(self._scout(lane), name=f"{lane.cursor}-scout")
            for lane in self._lanes[:-1]
        ]
        try:
            yield
        finally:
            for task in scouts:
                task.cancel()
            for task in scouts:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _scout(self, lane: Lane) -> None:
        await lane.scout(self.log, self.settings.batch_max * READ_MESSAGES)

    async def _open(self, executor: Executor) -> MqttConnection:
        settings = self.settings
        try:
            credentials = await asyncio.to_thread(load_credentials, settings, self.address.tls)
        except (OSError, ValueError) as err:
            message = f"cannot load credentials or certificates: {err}"
            raise MqttFailure(self.name, message, Failure.REJECTED) from err
        options = ConnectOptions(
            address=self.address,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311 if settings.protocol == "3.1.1" else mqtt.MQTTv5,
            keepalive=settings.keepalive,
            username=settings.username,
            password=credentials.password,
            ssl_context=credentials.ssl_context,
            tls_insecure=settings.tls_insecure,
            will_topic=self.status_topic,
            will_payload=self._status_payload("offline", with_time=False),
            # One more than the window: the status message shares the connection.
            max_inflight=settings.max_inflight + 1,
            connect_timeout=CONNECT_TIMEOUT,
            # Bounds what a publisher on the command topics can make us read.
            maximum_packet_size=None if self._commands is None else MAX_INBOUND_PACKET,
        )
        return await MqttConnection.open(self.name, options, executor)

    async def _session(self, connection: MqttConnection) -> MqttFailure:
        """Deliver over ``connection`` until it is lost; return why it was."""
        self.status.state = "connected"
        self.status.connected_since = time.time()
        self.status.disconnected_since = None
        log.info("%s: connected to %s", self.name, self.settings.url)
        limit = self.settings.max_inflight
        if connection.receive_maximum is not None:
            limit = min(limit, connection.receive_maximum)
        self._planner.max_packet = connection.maximum_packet_size or MQTT_MAX_PACKET
        windows = [
            InFlightWindow(lane.confirmed, n) for lane, n in split_in_flight(self._lanes, limit)
        ]
        window = windows[-1]  # the normal lane's: the status message takes a slot there
        self._windows = windows
        self._refusal = None
        self._acknowledged_on_connection = False
        failure: MqttFailure | None = None
        try:
            # The status message holds a slot of the window until its PUBACK: the
            # broker's Receive Maximum counts it like any telemetry message.
            status = connection.publish(
                self.status_topic, self._status_payload("online"), retain=True
            )
            window.take_slot()
            status.add_done_callback(functools.partial(self._on_status_ack, window))
            # Home Assistant's subscriptions first: once the broker acknowledged the
            # command subscription (status), it has processed those too.
            if self._home_assistant is not None:
                self._home_assistant.attach(connection)
            if self._commands is not None:
                self._commands.attach(connection)
            self._connection = connection
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(connection.run(), name=f"{self.name}-keepalive")
                    for lane, lane_window in zip(self._lanes, windows, strict=True):
                        tg.create_task(
                            self._deliver(connection, lane, lane_window),
                            name=f"{lane.cursor}-deliver",
                        )
                        tg.create_task(
                            self._retry(connection, lane, lane_window), name=f"{lane.cursor}-retry"
                        )
            except* MqttFailure as group:
                failure = _first_failure(group)
            except* StoreClosedError:
                await connection.close((self.status_topic, self._status_payload("offline")))
                raise StoreClosedError("the store is closed") from None
        except asyncio.CancelledError:
            await connection.close((self.status_topic, self._status_payload("offline")))
            raise
        finally:
            self._connection = None
            if self._commands is not None:
                self._commands.detach()
            if self._home_assistant is not None:
                self._home_assistant.detach()
            for each in windows:
                each.close()
            self._windows = []
            connection.abort()
            self.status.in_flight = 0
            self.status.connected_since = None
            self.status.disconnected_since = time.time()
        if failure is None:
            raise UplinkError(self.name, "delivery ended without a failure")
        if self._refusal is not None:
            # Some brokers (mosquitto 2) drop the connection after refusing a
            # publish: report the refusal, and back off as for any rejection.
            detail = f"{failure.detail}, after: {self._refusal}"
            return MqttFailure(self.name, detail, Failure.REJECTED)
        return failure

    # Delivery.

    def _show_in_flight(self) -> None:
        self.status.in_flight = sum(w.in_flight for w in self._windows)

    async def _deliver(
        self, connection: MqttConnection, lane: Lane, window: InFlightWindow
    ) -> None:
        batch_max = self.settings.batch_max
        linger = self.settings.linger
        while True:
            await window.wait_for_room()
            if self.log.last_seq <= window.read_pos:
                await self.log.wait_beyond(window.read_pos)
                if linger > 0 and not self.log.paced:
                    # Caught up and woken by one commit: let the next few join it, so a
                    # steady trickle committed reading by reading (live clients watch)
                    # still makes messages of several readings. Paced commits already
                    # carry a read interval's worth each.
                    await asyncio.sleep(linger)
            # Waiting for a token before reading lets readings pile up, so under
            # a message rate cap each message carries more readings.
            if self._rate is not None:
                await self._rate.acquire()
            try:
                readings, covered = await lane.read(
                    self.log, window.read_pos, batch_max * READ_MESSAGES
                )
            except StoreClosedError:
                raise
            except StoreError as err:
                self._record_error(f"reading the store failed: {err}")
                await asyncio.sleep(self.settings.reconnect_min)
                continue
            self.status.lost = sum(each.lost for each in self._lanes)
            # Readings this lane does not carry are passed over: the batch covers them,
            # so the cursor moves past them with what was sent before them.
            batch = Batch(covered)
            if self._home_assistant is not None:
                self._home_assistant.delivering(readings)
            messages = self._planner.plan(readings, batch)
            window.read_pos = batch.last_seq
            if window.acks.add(batch):
                self._confirm(lane, window.acks.confirmed)
            for index, message in enumerate(messages):
                if index:
                    await window.wait_for_slot()
                    if self._rate is not None:
                        await self._rate.acquire()
                window.in_flight += 1
                self._show_in_flight()
                message.first_sent = time.monotonic()
                self._send(connection, lane, window, message)

    async def _retry(self, connection: MqttConnection, lane: Lane, window: InFlightWindow) -> None:
        while True:
            message = await window.retry_ready.get()
            if self._rate is not None:
                await self._rate.acquire()
            self._send(connection, lane, window, message)

    def _send(
        self,
        connection: MqttConnection,
        lane: Lane,
        window: InFlightWindow,
        message: TelemetryMessage,
    ) -> None:
        try:
            future = connection.publish(message.topic, message.payload)
        except ValueError as err:
            # paho refuses the topic (a device id with MQTT wildcards) or the size.
            text = f"cannot publish to {message.topic!r}: {err}"
            self._failed(lane, window, message, text, for_good=True)
            return
        future.add_done_callback(functools.partial(self._on_puback, lane, window, message))

    def _on_puback(
        self,
        lane: Lane,
        window: InFlightWindow,
        message: TelemetryMessage,
        future: asyncio.Future[ReasonCode],
    ) -> None:
        if future.cancelled() or window.closed:
            return  # connection lost: everything unresolved is re-read from the cursor
        error = future.exception()
        if error is not None:
            # paho refused it when it left the queue of the broker's Receive Maximum.
            text = f"cannot publish to {message.topic!r}: {error}"
            self._failed(lane, window, message, text, for_good=True)
            return
        reason = future.result()
        if not reason.is_failure:
            self._acknowledged_on_connection = True
            status = self.status
            status.published_messages += 1
            status.published_readings += message.count
            if message.first_sent is not None:
                status.publish_latency.observe(time.monotonic() - message.first_sent)
            self._resolve(lane, window, message)
            return
        code = reason.value
        text = f"broker refused {message.topic}: {reason} ({code:#04x})"
        self._failed(
            lane,
            window,
            message,
            text,
            for_good=code in REFUSED_FOR_GOOD,
            not_authorized=code == NOT_AUTHORIZED,
        )

    def _failed(
        self,
        lane: Lane,
        window: InFlightWindow,
        message: TelemetryMessage,
        reason: str,
        *,
        for_good: bool,
        not_authorized: bool = False,
    ) -> None:
        """Dead-letter a message refused for good, else send it again after a delay."""
        if for_good and self.dead_letters is not None:
            now = time.time()
            for reading in message.readings:
                letter = DeadLetter(message.device, f"{self.name}: {reason}", reading.payload, now)
                self.dead_letters.put_dead_letter(letter)
            self.status.refused += message.count
            self._record_error(f"{reason}; {message.count} readings sent to the dead letters")
            self._resolve(lane, window, message)
            return
        self._record_error(reason)
        if not_authorized:
            self._refusal = reason
        kind = Failure.REJECTED if for_good or not_authorized else Failure.TRANSIENT
        settings = self.settings
        delay = retry_delay(
            kind, message.failures, settings.reconnect_min, settings.reconnect_max, self._rng
        )
        message.failures += 1
        window.retry_later(delay, message)

    def _resolve(self, lane: Lane, window: InFlightWindow, message: TelemetryMessage) -> None:
        if window.resolved(message):
            self._confirm(lane, window.acks.confirmed)
        self._show_in_flight()

    # Sending a range again (the `resend` command).

    async def resend(self, first: int, last: int) -> int:
        """Publish the readings it carries with ``first <= seq <= last`` once more, part
        by part, each part after the previous one's PUBACKs; the cursors do not move."""
        carried = self._lanes[0].carries if len(self._lanes) == 1 else self._carries_any
        part = self.settings.batch_max * RESEND_MESSAGES
        pos = first - 1
        sent = 0
        while pos < last:
            connection = self._connection
            if connection is None:
                raise UplinkError(self.name, f"not connected (state {self.status.state})")
            rows = await self.log.read_after(pos, min(part, last - pos))
            rows = [r for r in rows if r.seq <= last]
            if not rows:
                break
            pos = rows[-1].seq
            readings = [r for r in rows if carried(r)]
            messages = self._planner.plan(readings, Batch(pos))
            try:
                futures = [connection.publish(m.topic, m.payload) for m in messages]
                async with asyncio.timeout(RESEND_TIMEOUT):
                    reasons = await asyncio.gather(*futures)
            except TimeoutError:
                raise UplinkError(self.name, f"no PUBACK within {RESEND_TIMEOUT:g}s") from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # The connection was lost: paho's futures were cancelled.
                raise UplinkError(self.name, "the connection was lost") from None
            except (ValueError, MqttFailure) as err:
                raise UplinkError(self.name, f"cannot publish: {err}") from None
            for message, reason in zip(messages, reasons, strict=True):
                if reason.is_failure:
                    detail = f"broker refused {message.topic}: {reason} ({reason.value:#04x})"
                    raise UplinkError(self.name, detail)
            sent += len(readings)
            self.status.resent += len(readings)
        return sent

    def _carries_any(self, reading: StoredReading) -> bool:
        return any(lane.carries(reading) for lane in self._lanes)

    # The durable cursors.

    def _confirm(self, lane: Lane, seq: int) -> None:
        lane.confirm(seq)

    async def _ack_loop(self, lane: Lane) -> None:
        """Moves ``lane``'s durable cursor at most once per ``ack_interval``.

        PUBACKs arriving meanwhile are coalesced into the next write. A cursor that
        lags only means readings sent again after a crash (at least once); ``run``
        writes the final position on a clean stop.
        """
        interval = self.settings.ack_interval
        while True:
            await lane.ack_wanted.wait()
            lane.ack_wanted.clear()
            await self._ack_now(lane)
            if interval > 0:
                await asyncio.sleep(interval)

    async def _ack_now(self, lane: Lane) -> None:
        target = lane.confirmed
        if target <= lane.acked_seq:
            return
        try:
            await self.log.ack(lane.cursor, target)
        except StoreError as err:
            self._record_error(f"moving the cursor failed: {err}")
            return
        lane.acked_seq = max(lane.acked_seq, target)
        self._update_acked()

    def _update_acked(self) -> None:
        # Every reading it carries up to the lowest lane's cursor is acknowledged.
        self.status.acked_seq = min(lane.acked_seq for lane in self._lanes)

    # Status.

    def _status_payload(self, state: str, *, with_time: bool = True) -> bytes:
        body: dict[str, object] = {"gateway": self.gateway_id, "state": state}
        if with_time:
            body["ts"] = time.time()
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def _on_status_ack(self, window: InFlightWindow, future: asyncio.Future[ReasonCode]) -> None:
        if future.cancelled() or window.closed:
            return
        window.free_slot()
        self._show_in_flight()
        reason = future.result()
        if not reason.is_failure:
            self._acknowledged_on_connection = True
            return
        text = f"broker refused {self.status_topic}: {reason} ({reason.value:#04x})"
        self._record_error(text)
        if reason.value == NOT_AUTHORIZED:
            self._refusal = text

    def _record_error(self, message: str) -> None:
        self.status.errors += 1
        self.status.last_error = message
        log.warning("%s: %s", self.name, message)


def _first_failure(group: BaseExceptionGroup[MqttFailure]) -> MqttFailure:
    for error in group.exceptions:
        if isinstance(error, MqttFailure):
            return error
        if isinstance(error, BaseExceptionGroup):
            return _first_failure(error)
    raise group
