"""The WebSocket uplink: delivers the reading log to a cloud endpoint, at least once.

One consumer of the log (durable cursor = the uplink's name), like the MQTT
uplink, for clouds without a broker: an ``[[uplinks]]`` table with
``type = "websocket"``, built by ``gateway.uplinks.registry``. It reads after the
cursor, sends batches of stored readings with the seq range they cover, up to
``max_inflight`` of them unacknowledged, and moves the cursor only over what the
server acknowledged, in order (acks are cumulative). On any disconnect it starts again from the
cursor: duplicates are possible, loss is not. docs/websocket-uplink.md is the
protocol (gateway/uplinks/ws_protocol.py in code).

It carries the devices its ``devices`` globs select, in one lane: readings of
``priority = "high"`` devices go in seq order with the rest (no priority lane yet).

States as for every uplink: ``connecting -> connected -> backoff -> …``, ``stopped``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time

import aiohttp

from gateway.errors import StoreClosedError, StoreError, UplinkError
from gateway.interfaces import ReadingLog, UplinkStatus
from gateway.retry import Backoff, Failure
from gateway.settings import UplinkStart, WebSocketSettings
from gateway.uplinks.broker import tls_context
from gateway.uplinks.lanes import Lane
from gateway.uplinks.route import PriorityRules, Selection
from gateway.uplinks.ws_flight import Flight
from gateway.uplinks.ws_protocol import (
    MAX_SERVER_MESSAGE,
    REJECTING,
    SUBPROTOCOL,
    Endpoint,
    ProtocolError,
    batch_frame,
    hello,
    parse,
    seq_field,
)

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0  # for the server's answer to our close frame
TAIL_BATCHES = 2


class WsFailure(UplinkError):
    """Why a connection attempt or a connection ended, and how to back off after it."""

    def __init__(self, name: str, detail: str, kind: Failure) -> None:
        super().__init__(name, detail)
        self.detail = detail
        self.kind = kind


class WebSocketUplink:
    """Implements ``gateway.interfaces.Uplink`` over the edge-gateway.v1 WebSocket protocol.

    ``selection``: the devices it carries (default: every device). ``best_effort``:
    retention does not wait for it. ``start``: where its cursor starts when it does not
    exist yet.
    """

    def __init__(
        self,
        settings: WebSocketSettings,
        gateway_id: str,
        log: ReadingLog,
        name: str = "websocket",
        *,
        selection: Selection | None = None,
        best_effort: bool = False,
        start: UplinkStart = "oldest",
    ) -> None:
        self.name = name
        self.best_effort = best_effort
        self.start = start
        self.status = UplinkStatus()
        self.settings = settings
        self.gateway_id = gateway_id
        self.log = log
        try:
            self.endpoint = Endpoint.parse(settings.url)
        except ValueError as err:
            raise UplinkError(name, f"url: {err}") from err
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        # Highest seq the server acknowledged (may be ahead of the durable cursor
        # while the write to the log is under way).
        self._confirmed = 0
        self._ack_wanted = asyncio.Event()
        self._acknowledged_on_connection = False
        carries_device = (selection or Selection(("*",), PriorityRules())).carries_device
        self._lane = Lane(
            name, lambda r: carries_device(r.device), TAIL_BATCHES * settings.batch_max
        )

    async def run(self) -> None:
        self._lane.start(self.log.last_seq)
        self.log.add_listener(self._lane.on_commit)
        try:
            await self._run()
        finally:
            self.log.remove_listener(self._lane.on_commit)

    async def _run(self) -> None:
        self._confirmed = await self.log.register_consumer(
            self.name, start_now=self.start == "now", best_effort=self.best_effort
        )
        self.status.acked_seq = self._confirmed
        self.status.disconnected_since = time.time()
        store_open = True
        try:
            async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as tg:
                acker = tg.create_task(self._ack_loop(), name=f"{self.name}-ack")
                try:
                    await self._connect_loop(http)
                except* StoreClosedError:
                    log.info("%s: the store is closed; stopping", self.name)
                    store_open = False
                    acker.cancel()
        finally:
            self.status.state = "stopped"
            if store_open:
                await self._ack_now()

    # Connection state machine.

    async def _connect_loop(self, http: aiohttp.ClientSession) -> None:
        settings = self.settings
        backoff = Backoff(settings.reconnect_min, settings.reconnect_max, rng=self._rng)
        while True:
            self.status.state = "connecting"
            self._acknowledged_on_connection = False
            try:
                ws = await self._open(http)
            except WsFailure as refused:
                failure = refused
            else:
                failure = await self._session(ws)
                # Only a connection that got something acknowledged counts as working.
                if self._acknowledged_on_connection:
                    backoff.reset()
            self._record_error(failure.detail)
            delay = backoff.delay(failure.kind)
            self.status.state = "backoff"
            log.info("%s: next connection attempt in %.1fs", self.name, delay)
            await asyncio.sleep(delay)

    async def _open(self, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        settings = self.settings
        try:
            token, context = await asyncio.to_thread(self._credentials)
        except (OSError, ValueError, ssl.SSLError) as err:
            message = f"cannot load the token or certificates: {err}"
            raise WsFailure(self.name, message, Failure.REJECTED) from err
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        try:
            async with asyncio.timeout(settings.connect_timeout):
                ws = await http.ws_connect(
                    settings.url,
                    protocols=(SUBPROTOCOL,),
                    headers=headers,
                    ssl=context if context is not None else True,
                    compress=15 if settings.compress else 0,
                    heartbeat=settings.heartbeat,
                    max_msg_size=MAX_SERVER_MESSAGE,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
                )
        except aiohttp.WSServerHandshakeError as err:
            kind = Failure.REJECTED if err.status in (401, 403) else Failure.TRANSIENT
            raise WsFailure(
                self.name, f"handshake refused: {err.status} {err.message}", kind
            ) from err
        except aiohttp.ClientSSLError as err:
            raise WsFailure(self.name, f"TLS: {err}", Failure.REJECTED) from err
        except (aiohttp.ClientError, OSError) as err:
            raise WsFailure(self.name, f"cannot connect: {err}", Failure.TRANSIENT) from err
        except TimeoutError:
            message = f"no answer within {settings.connect_timeout:g}s"
            raise WsFailure(self.name, message, Failure.TRANSIENT) from None
        if ws.protocol != SUBPROTOCOL:
            await ws.close()
            message = f"the server does not speak {SUBPROTOCOL} (it chose {ws.protocol!r})"
            raise WsFailure(self.name, message, Failure.REJECTED)
        return ws

    def _credentials(self) -> tuple[str | None, ssl.SSLContext | None]:
        """Blocking: read on each attempt, so a rotated token or certificate is picked up."""
        settings = self.settings
        token = settings.token
        if settings.token_file is not None:
            token = settings.token_file.read_text(encoding="utf-8").strip()
        return token, tls_context(settings) if self.endpoint.tls else None

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> WsFailure:
        """Deliver over ``ws`` until it is lost; return why it was."""
        failure: WsFailure | None = None
        flight = Flight(self._confirmed, self.settings.max_inflight)
        try:
            await ws.send_str(hello(self.gateway_id, self._confirmed))
            await self._welcomed(ws)
            self.status.state = "connected"
            self.status.connected_since = time.time()
            self.status.disconnected_since = None
            log.info("%s: connected to %s", self.name, self.settings.url)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._send_loop(ws, flight), name=f"{self.name}-send")
                tg.create_task(self._receive_loop(ws, flight), name=f"{self.name}-receive")
        except* WsFailure as group:
            failure = _first_failure(group)
        except* (ConnectionError, aiohttp.ClientError) as group:
            failure = WsFailure(
                self.name, f"connection lost: {group.exceptions[0]}", Failure.TRANSIENT
            )
        finally:
            self.status.in_flight = 0
            self.status.connected_since = None
            self.status.disconnected_since = time.time()
            # Cancelled (a stop) or failed: say goodbye if the link still carries it.
            await asyncio.shield(ws.close(code=1001))
        assert failure is not None  # both loops run until they raise
        return failure

    async def _welcomed(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                message = await self._next_message(ws)
        except TimeoutError:
            raise WsFailure(self.name, "no welcome from the server", Failure.TRANSIENT) from None
        if message.get("type") != "welcome":
            raise WsFailure(
                self.name, f"expected a welcome, got {message.get('type')!r}", Failure.REJECTED
            )

    async def _next_message(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
        """The next JSON message; the end of the connection as a WsFailure."""
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                try:
                    message = parse(msg.data)
                except ProtocolError as err:
                    raise WsFailure(self.name, f"server sent {err}", Failure.REJECTED) from None
                if message["type"] == "error":
                    # The close that follows says how to back off; keep its reason.
                    self._record_error(f"server: {message.get('message')} ({message.get('code')})")
                    continue
                return message
            raise self._closed(ws, msg)

    def _closed(self, ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> WsFailure:
        code = ws.close_code
        if msg.type is aiohttp.WSMsgType.ERROR:
            return WsFailure(
                self.name, f"connection lost: {ws.exception() or msg.data}", Failure.TRANSIENT
            )
        detail = f"server closed the connection ({code}{': ' + msg.extra if msg.extra else ''})"
        kind = Failure.REJECTED if code in REJECTING else Failure.TRANSIENT
        return WsFailure(self.name, detail, kind)

    # Delivery.

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse, flight: Flight) -> None:
        settings = self.settings
        while True:
            await flight.wait_for_room()
            if self.log.last_seq <= flight.read_pos:
                await self.log.wait_beyond(flight.read_pos)
                if settings.linger > 0 and not self.log.paced:
                    # Woken by one commit while live clients watch: let a few more join.
                    await asyncio.sleep(settings.linger)
            lost_before = self._lane.lost
            try:
                readings, last_seq = await self._lane.read(
                    self.log, flight.read_pos, settings.batch_max
                )
            except StoreClosedError:
                raise
            except StoreError as err:
                self._record_error(f"reading the store failed: {err}")
                await asyncio.sleep(settings.reconnect_min)
                continue
            self.status.lost = self._lane.lost
            if not readings and not len(flight) and self._lane.lost == lost_before:
                # Only readings of devices it does not carry: nothing is owed before
                # them, so the cursor passes them over unsent.
                flight.read_pos = last_seq
                self._confirmed = last_seq
                self._ack_wanted.set()
                continue
            # Empty otherwise (batches out, or readings dropped from the log by its
            # bounds): the batch covers the range, so the server's ack moves the cursor
            # past it in order, and the server sees no hole unexplained.
            first_seq = flight.read_pos + 1
            flight.sent(last_seq, len(readings), time.monotonic())
            self.status.in_flight = len(flight)
            await ws.send_frame(
                batch_frame(self.gateway_id, first_seq, last_seq, readings),
                aiohttp.WSMsgType.TEXT,
            )

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse, flight: Flight) -> None:
        ack_timeout = self.settings.ack_timeout
        while True:
            # Wake at the oldest batch's deadline, or after a whole timeout when none is
            # out (one may be sent meanwhile).
            oldest = flight.oldest_sent_at
            deadline = (time.monotonic() if oldest is None else oldest) + ack_timeout
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    message = await self._next_message(ws)
            except TimeoutError:
                oldest = flight.oldest_sent_at
                if oldest is not None and time.monotonic() - oldest >= ack_timeout:
                    detail = f"no ack within {ack_timeout:g}s"
                    raise WsFailure(self.name, detail, Failure.TRANSIENT) from None
                continue
            if message["type"] != "ack":
                continue  # a later version's message this one does not know
            try:
                seq = seq_field(message, "seq", 1)
                resolved = flight.ack(seq)
            except ProtocolError as err:
                raise WsFailure(
                    self.name, f"server sent a bad ack: {err}", Failure.REJECTED
                ) from None
            now = time.monotonic()
            status = self.status
            for batch in resolved:
                status.published_messages += 1
                status.published_readings += batch.count
                status.publish_latency.observe(now - batch.sent_at)
            status.in_flight = len(flight)
            self._acknowledged_on_connection = True
            self._confirmed = seq
            self._ack_wanted.set()

    # The durable cursor.

    async def _ack_loop(self) -> None:
        """Moves the durable cursor at most once per ``ack_interval``; acks arriving
        meanwhile join the next write (a lagging cursor only means resends)."""
        interval = self.settings.ack_interval
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            await self._ack_now()
            if interval > 0:
                await asyncio.sleep(interval)

    async def _ack_now(self) -> None:
        target = self._confirmed
        if target <= self.status.acked_seq:
            return
        try:
            await self.log.ack(self.name, target)
        except StoreError as err:
            self._record_error(f"moving the cursor failed: {err}")
            return
        self.status.acked_seq = max(self.status.acked_seq, target)

    def _record_error(self, message: str) -> None:
        self.status.errors += 1
        self.status.last_error = message
        log.warning("%s: %s", self.name, message)


def _loop_time(monotonic: float) -> float:
    """``monotonic`` (time.monotonic) on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic - time.monotonic())


def _first_failure(group: BaseExceptionGroup[WsFailure]) -> WsFailure:
    for error in group.exceptions:
        if isinstance(error, WsFailure):
            return error
        if isinstance(error, BaseExceptionGroup):
            return _first_failure(error)
    raise group
