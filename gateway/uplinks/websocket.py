"""The WebSocket uplink: delivers the reading log to a cloud endpoint, at least once.

A consumer of the log (durable cursor = the uplink's name), like the MQTT
uplink, for clouds without a broker: an ``[[uplinks]]`` table with
``type = "websocket"``, built by ``gateway.uplinks.registry``. It reads after the
cursor, sends batches of stored readings with the seq range they cover, up to
``max_inflight`` of them unacknowledged, and moves the cursor only over what the
server acknowledged, in order (acks are cumulative). On any disconnect it starts again from the
cursor: duplicates are possible, loss is not. docs/websocket-uplink.md is the
protocol (gateway/uplinks/ws_protocol.py in code).

It carries the devices its ``devices`` globs select. When some of them are of
``priority = "high"`` it reads the log in two lanes (gateway/uplinks/lanes.py), each
over a connection (stream) of its own whose hello names the lane, with its own
durable cursor (``NAME:priority`` beside ``NAME``) and a quarter of ``max_inflight``:
a backlog on the normal stream never holds an alarm back. Each stream stays
contiguous: what the lane does not carry goes as empty covering batches.

States as for every uplink: ``connecting -> connected -> backoff -> …``, ``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator

import aiohttp

from gateway.errors import StoreClosedError, StoreError, UplinkError
from gateway.interfaces import ReadingLog, UplinkStatus
from gateway.retry import Backoff, Failure
from gateway.settings import UplinkStart, WebSocketSettings
from gateway.uplinks.broker import tls_context
from gateway.uplinks.lanes import Lane, lanes_for, register_lanes, split_in_flight
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
# How long a resend waits for the server's ack of one batch.
RESEND_TIMEOUT = 30.0
TAIL_BATCHES = 2
# How many batches' worth of the log the priority lane passes over per read while its
# stream is down.
SCOUT_BATCHES = 4


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
        # The lanes whose current connection got something acknowledged.
        self._acknowledged_on_connection: set[Lane] = set()
        # Each connected lane's batches in flight.
        self._flights: dict[Lane, Flight] = {}
        # The HTTP client while it runs: `resend` opens its own connection with it.
        self._http: aiohttp.ClientSession | None = None
        self._carries_device = (selection or Selection(("*",), PriorityRules())).carries_device
        # Its places in the log, the priority lane (if any) first: a lane's ``confirmed``
        # is the highest seq the server acknowledged on its stream (may be ahead of the
        # durable cursor while the write to the log is under way).
        self._lanes = lanes_for(name, selection, TAIL_BATCHES * settings.batch_max)

    async def run(self) -> None:
        for lane in self._lanes:
            lane.start(self.log.last_seq)
            self.log.add_listener(lane.on_commit)
        try:
            await self._run()
        finally:
            for lane in self._lanes:
                self.log.remove_listener(lane.on_commit)

    async def _run(self) -> None:
        await register_lanes(
            self.log, self._lanes, start_now=self.start == "now", best_effort=self.best_effort
        )
        self._update_acked()
        self.status.disconnected_since = time.time()
        store_open = True
        try:
            async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as tg:
                self._http = http
                ackers = [
                    tg.create_task(self._ack_loop(lane), name=f"{lane.cursor}-ack")
                    for lane in self._lanes
                ]
                try:
                    async with asyncio.TaskGroup() as streams:
                        for lane, limit in split_in_flight(self._lanes, self.settings.max_inflight):
                            streams.create_task(
                                self._connect_loop(http, lane, limit), name=f"{lane.cursor}-stream"
                            )
                except* StoreClosedError:
                    log.info("%s: the store is closed; stopping", self.name)
                    store_open = False
                    for acker in ackers:
                        acker.cancel()
        finally:
            self._http = None
            self.status.state = "stopped"
            if store_open:
                for lane in self._lanes:
                    await self._ack_now(lane)

    def _is_normal(self, lane: Lane) -> bool:
        """The normal lane's stream is the uplink's state; the priority one's is not."""
        return lane is self._lanes[-1]

    def _lane_name(self, lane: Lane) -> str:
        return "normal" if self._is_normal(lane) else "priority"

    # Connection state machine.

    async def _connect_loop(self, http: aiohttp.ClientSession, lane: Lane, limit: int) -> None:
        """One lane's stream: connect, deliver, back off, again."""
        settings = self.settings
        backoff = Backoff(settings.reconnect_min, settings.reconnect_max, rng=self._rng)
        normal = self._is_normal(lane)
        while True:
            if normal:
                self.status.state = "connecting"
            self._acknowledged_on_connection.discard(lane)
            try:
                async with self._scouting(lane):
                    ws = await self._open(http)
            except WsFailure as refused:
                failure = refused
            else:
                failure = await self._session(ws, lane, limit)
                # Only a connection that got something acknowledged counts as working.
                if lane in self._acknowledged_on_connection:
                    backoff.reset()
            self._record_error(failure.detail)
            delay = backoff.delay(failure.kind)
            if normal:
                self.status.state = "backoff"
            log.info(
                "%s: next %s connection attempt in %.1fs", self.name, self._lane_name(lane), delay
            )
            async with self._scouting(lane):
                await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def _scouting(self, lane: Lane) -> AsyncIterator[None]:
        """While its stream is down, the priority lane follows the log (``Lane.scout``)."""
        if self._is_normal(lane):
            yield
            return
        scout = asyncio.create_task(
            lane.scout(self.log, SCOUT_BATCHES * self.settings.batch_max),
            name=f"{lane.cursor}-scout",
        )
        try:
            yield
        finally:
            scout.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scout

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

    async def _session(
        self, ws: aiohttp.ClientWebSocketResponse, lane: Lane, limit: int
    ) -> WsFailure:
        """Deliver ``lane`` over ``ws`` until it is lost; return why it was."""
        failure: WsFailure | None = None
        normal = self._is_normal(lane)
        flight = Flight(lane.confirmed, limit)
        try:
            await ws.send_str(hello(self.gateway_id, lane.confirmed, self._lane_name(lane)))
            await self._welcomed(ws)
            self._flights[lane] = flight
            if normal:
                self.status.state = "connected"
                self.status.connected_since = time.time()
                self.status.disconnected_since = None
            log.info(
                "%s: %s stream connected to %s", self.name, self._lane_name(lane), self.settings.url
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._send_loop(ws, lane, flight), name=f"{lane.cursor}-send")
                tg.create_task(self._receive_loop(ws, lane, flight), name=f"{lane.cursor}-receive")
        except* WsFailure as group:
            failure = _first_failure(group)
        except* (ConnectionError, aiohttp.ClientError) as group:
            failure = WsFailure(
                self.name, f"connection lost: {group.exceptions[0]}", Failure.TRANSIENT
            )
        finally:
            self._flights.pop(lane, None)
            self._show_in_flight()
            if normal:
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

    async def _send_loop(
        self, ws: aiohttp.ClientWebSocketResponse, lane: Lane, flight: Flight
    ) -> None:
        settings = self.settings
        while True:
            await flight.wait_for_room()
            if self.log.last_seq <= flight.read_pos:
                await self.log.wait_beyond(flight.read_pos)
                if settings.linger > 0 and not self.log.paced:
                    # Woken by one commit while live clients watch: let a few more join.
                    await asyncio.sleep(settings.linger)
            try:
                readings, last_seq = await lane.read(self.log, flight.read_pos, settings.batch_max)
            except StoreClosedError:
                raise
            except StoreError as err:
                self._record_error(f"reading the store failed: {err}")
                await asyncio.sleep(settings.reconnect_min)
                continue
            self.status.lost = sum(each.lost for each in self._lanes)
            # Empty (readings of devices it does not carry only, of the other lane
            # only, or readings dropped from the log by its bounds): the batch still
            # covers the range, so batches stay contiguous, the server sees no hole
            # unexplained and its ack moves the cursor past them in order.
            first_seq = flight.read_pos + 1
            flight.sent(last_seq, len(readings), time.monotonic())
            self._show_in_flight()
            await ws.send_frame(
                batch_frame(self.gateway_id, first_seq, last_seq, readings),
                aiohttp.WSMsgType.TEXT,
            )

    async def _receive_loop(
        self, ws: aiohttp.ClientWebSocketResponse, lane: Lane, flight: Flight
    ) -> None:
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
            self._show_in_flight()
            self._acknowledged_on_connection.add(lane)
            lane.confirm(seq)

    def _show_in_flight(self) -> None:
        self.status.in_flight = sum(len(flight) for flight in self._flights.values())

    # Sending a range again (the `resend` command).

    async def resend(self, first: int, last: int) -> int:
        """Send the readings it carries with ``first <= seq <= last`` once more, over a
        connection of its own whose hello starts at ``first - 1`` (so the protocol's
        batches stay contiguous on both connections), each batch after the previous
        one's ack; the cursor does not move."""
        http = self._http
        if http is None:
            raise UplinkError(self.name, f"not running (state {self.status.state})")
        try:
            ws = await self._open(http)
        except WsFailure as err:
            raise UplinkError(self.name, err.detail) from None
        pos = first - 1
        sent = 0
        try:
            await ws.send_str(hello(self.gateway_id, pos))
            await self._welcomed(ws)
            while pos < last:
                rows = await self.log.read_after(pos, min(self.settings.batch_max, last - pos))
                rows = [r for r in rows if r.seq <= last]
                end = rows[-1].seq if rows else last
                readings = [r for r in rows if self._carries_device(r.device)]
                frame = batch_frame(self.gateway_id, pos + 1, end, readings)
                await ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
                async with asyncio.timeout(RESEND_TIMEOUT):
                    while (message := await self._next_message(ws))["type"] != "ack":
                        pass  # a later version's message this one does not know
                if seq_field(message, "seq", 1) != end:
                    raise UplinkError(self.name, f"resend: ack of {message['seq']}, not {end}")
                sent += len(readings)
                self.status.resent += len(readings)
                pos = end
        except TimeoutError:
            raise UplinkError(self.name, f"no ack within {RESEND_TIMEOUT:g}s") from None
        except ProtocolError as err:
            raise UplinkError(self.name, f"server sent a bad ack: {err}") from None
        except WsFailure as err:
            raise UplinkError(self.name, err.detail) from None
        except (ConnectionError, aiohttp.ClientError) as err:
            raise UplinkError(self.name, f"connection lost: {err}") from None
        finally:
            await asyncio.shield(ws.close())
        return sent

    # The durable cursor.

    async def _ack_loop(self, lane: Lane) -> None:
        """Moves ``lane``'s durable cursor at most once per ``ack_interval``; acks
        arriving meanwhile join the next write (a lagging cursor only means resends)."""
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
