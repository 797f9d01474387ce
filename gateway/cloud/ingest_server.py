"""The reference ingest server: the server side of the WebSocket uplink (``edge-gateway ingest``).

It accepts gateways on ``/ingest`` (edge-gateway.v1, docs/websocket-uplink.md),
lands each batch through gateway/cloud/landing.py (SQLite or PostgreSQL, each
``(gateway, seq)`` once) and acknowledges a batch only after its transaction
committed. Hostile or broken input gets an error message, a close code and a
counter, never a crash; ``GET /metrics`` shows the counters, ``GET /healthz``
says it runs. Small on purpose: a starting point for a real backend.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from gateway.cloud.landing import BadReading, Landing, LandingError, check_gateway, open_landing
from gateway.uplinks.ws_protocol import (
    LANES,
    SUBPROTOCOL,
    VERSION,
    BatchHead,
    CloseCode,
    ProtocolError,
    ack,
    error,
    parse,
    seq_field,
    welcome,
)

log = logging.getLogger(__name__)

PATH = "/ingest"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_IN_FLIGHT = 64  # batches a gateway may send before the first ack (advertised)
HELLO_TIMEOUT = 10.0
# Readings landed in one transaction at most, when several batches wait.
GROUP_READINGS = 20_000
HEARTBEAT = 20.0


@dataclass(frozen=True, slots=True)
class IngestSettings:
    host: str
    port: int
    db_url: str
    token: str | None = None
    # TLS: the server's certificate and key; with client_ca, gateways must present a
    # certificate that CA signed (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES


@dataclass(slots=True)
class IngestCounters:
    """What /metrics shows, as ``edge_gateway_ingest_<name>``."""

    connections: int = 0  # sessions that said hello and were welcomed
    connected: int = 0  # open now
    batches: int = 0  # acknowledged
    readings_landed: int = 0  # newly stored
    readings_duplicate: int = 0  # received again, already stored
    refused_auth: int = 0  # missing or wrong token
    refused_handshake: int = 0  # not a WebSocket, not our subprotocol
    bad_messages: int = 0  # not JSON, bad fields, out of order, too big, bad readings
    storage_failures: int = 0  # the database failed; the batch was not acknowledged


class Session:
    """One stream of a gateway: hello, then batches in order, each acked after commit.

    A gateway may hold two streams at once, its normal lane's and its priority lane's
    (the hello's ``lane``): each is contiguous on its own, so the order check is per
    session; both land in the same table, each ``(gateway, seq)`` once.

    A reader checks each batch as it arrives while a lander stores them: the batches
    waiting when the lander is free land together, in one transaction and one fsync,
    and one ack (the last one's ``last_seq``) answers them all.
    """

    def __init__(self, server: IngestServer, ws: web.WebSocketResponse, peer: str) -> None:
        self.server = server
        self.ws = ws
        self.peer = peer
        self.gateway = ""
        self.lane = "normal"
        self.expected_first = 0  # first_seq the next batch must have
        self._checked: asyncio.Queue[BatchHead | None] = asyncio.Queue(MAX_IN_FLIGHT)

    async def run(self) -> None:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                message = await self._next()
        except TimeoutError:
            raise ProtocolError(f"no hello within {HELLO_TIMEOUT:g}s") from None
        if message is None:
            return
        self._hello(message)
        counters = self.server.counters
        counters.connections += 1
        counters.connected += 1
        try:
            await self.ws.send_str(welcome(self.server.settings.max_message_bytes, MAX_IN_FLIGHT))
            log.info("%s: gateway %s connected (%s lane)", self.peer, self.gateway, self.lane)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(), name=f"ingest-read-{self.peer}")
                tg.create_task(self._land(), name=f"ingest-land-{self.peer}")
        except* ProtocolError as group:
            raise group.exceptions[0] from None
        except* ConnectionError as group:
            # The gateway went away mid-ack: logged by the handler as a lost connection.
            raise group.exceptions[0] from None
        finally:
            counters.connected -= 1

    async def _next(self) -> dict[str, Any] | None:
        """The next message, or None when the gateway closed the connection."""
        msg = await self.ws.receive()
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            return parse(msg.data)
        if msg.type is WSMsgType.ERROR:
            # aiohttp reports a message above max_msg_size (and broken frames) this way.
            raise ProtocolError(f"bad frame: {self.ws.exception()}", CloseCode.TOO_BIG)
        return None

    def _hello(self, message: dict[str, Any]) -> None:
        if message["type"] != "hello":
            raise ProtocolError(f"expected hello, got {message['type']!r}")
        if message.get("version") != VERSION:
            raise ProtocolError(
                f"version {message.get('version')!r} not supported (this server speaks {VERSION})",
                CloseCode.UNSUPPORTED_VERSION,
            )
        try:
            self.gateway = check_gateway(message.get("gateway"))
        except LandingError as err:
            raise ProtocolError(str(err)) from None
        self.expected_first = seq_field(message, "acked_seq") + 1
        lane = message.get("lane", "normal")
        if lane not in LANES:
            raise ProtocolError(f"lane: one of {', '.join(LANES)}")
        self.lane = lane

    async def _read(self) -> None:
        while (message := await self._next()) is not None:
            if message["type"] != "batch":
                raise ProtocolError(f"unknown message type {message['type']!r}")
            head = BatchHead.of(message)
            if head.gateway != self.gateway:
                raise ProtocolError(f"gateway {head.gateway!r} in a session of {self.gateway!r}")
            if head.first_seq != self.expected_first:
                raise ProtocolError(
                    f"first_seq {head.first_seq}: the batch after seq "
                    f"{self.expected_first - 1} starts at {self.expected_first}"
                )
            self.expected_first = head.last_seq + 1
            await self._checked.put(head)
        await self._checked.put(None)  # the gateway closed: land what is queued, then end

    async def _land(self) -> None:
        while (head := await self._checked.get()) is not None:
            heads = [head]
            readings = list(head.readings)
            # Whatever else is already checked joins this transaction.
            while not self._checked.empty() and len(readings) < GROUP_READINGS:
                queued = self._checked.get_nowait()
                if queued is None:
                    self._checked.put_nowait(None)
                    break
                heads.append(queued)
                readings += queued.readings
            await self._commit(heads, readings)

    async def _commit(self, heads: list[BatchHead], readings: list[Any]) -> None:
        counters = self.server.counters
        landing = self.server.landing
        conflicts = landing.conflicts
        first, last = heads[0].first_seq, heads[-1].last_seq
        try:
            inserted = await landing.land(self.gateway, readings)
        except BadReading as err:
            raise ProtocolError(str(err)) from None
        except LandingError as err:
            counters.storage_failures += 1
            raise ProtocolError(str(err), CloseCode.STORAGE_FAILED) from None
        if landing.conflicts > conflicts:
            log.warning(
                "%s: %d readings of seq %d to %d came again with another content; kept the first",
                self.gateway,
                landing.conflicts - conflicts,
                first,
                last,
            )
        # Committed: only now may the gateway move its cursor.
        await self.ws.send_str(ack(last))
        counters.batches += len(heads)
        counters.readings_landed += inserted
        counters.readings_duplicate += len(readings) - inserted


class IngestServer:
    def __init__(self, settings: IngestSettings, landing: Landing) -> None:
        self.settings = settings
        self.landing = landing
        self.counters = IngestCounters()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)
        app.router.add_get(PATH, self.ingest)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        return app

    def _authorized(self, request: web.Request) -> bool:
        token = self.settings.token
        if token is None:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), token.encode())

    async def ingest(self, request: web.Request) -> web.StreamResponse:
        counters = self.counters
        peer = request.remote or "?"
        if not self._authorized(request):
            counters.refused_auth += 1
            log.warning("%s: refused: missing or wrong token", peer)
            raise web.HTTPUnauthorized(
                text="a valid bearer token is required\n", headers={"WWW-Authenticate": "Bearer"}
            )
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),
            max_msg_size=self.settings.max_message_bytes,
            heartbeat=HEARTBEAT,
            compress=True,
        )
        ready = ws.can_prepare(request)
        if not ready.ok or ready.protocol != SUBPROTOCOL:
            counters.refused_handshake += 1
            raise web.HTTPBadRequest(
                text=f"a WebSocket upgrade with Sec-WebSocket-Protocol: {SUBPROTOCOL} is required\n"
            )
        await ws.prepare(request)
        session = Session(self, ws, peer)
        try:
            await session.run()
        except ProtocolError as err:
            if err.code is not CloseCode.STORAGE_FAILED:
                counters.bad_messages += 1
            log.warning("%s (%s): %s; closing with %d", peer, session.gateway, err, err.code)
            if not ws.closed:
                await ws.send_str(error(err.code, str(err)))
                await ws.close(code=err.code, message=str(err)[:120].encode())
        except ConnectionError as err:
            log.info("%s (%s): connection lost: %s", peer, session.gateway, err)
        return ws

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "connected": self.counters.connected})

    async def metrics(self, _request: web.Request) -> web.Response:
        lines = [
            f"edge_gateway_ingest_{item.name} {getattr(self.counters, item.name)}"
            for item in fields(IngestCounters)
        ]
        lines.append(f"edge_gateway_ingest_conflicts {self.landing.conflicts}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def server_tls(settings: IngestSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.client_ca is not None:
        context.load_verify_locations(settings.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def serve(settings: IngestSettings, started: asyncio.Event | None = None) -> None:
    """Serve until cancelled; ``started`` is set once the port listens."""
    landing = await open_landing(settings.db_url)
    server = IngestServer(settings, landing)
    runner = web.AppRunner(server.app(), handle_signals=False, access_log=None)
    try:
        await runner.setup()
        context = server_tls(settings)
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
        await site.start()
        scheme = "wss" if context is not None else "ws"
        log.info("ingest server on %s://%s:%d%s", scheme, settings.host, settings.port, PATH)
        if started is not None:
            started.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await landing.close()
