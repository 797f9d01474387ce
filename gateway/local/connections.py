"""Bounds on the local server's connections, so neighbours on the LAN cannot exhaust it.

Every accepted connection passes through ``ConnectionGuard`` before aiohttp sees it,
and with TLS before the handshake (the guard runs it), so a peer that never sends a
ClientHello is counted and cut like any other:

- at most ``max_connections`` at once. That bound is lowered further so that the
  process's file descriptor limit keeps ``FD_RESERVE`` descriptors (plus room for a
  burst of accepts) out of the server's reach: a serial port can always reopen, the
  store can always open its files, whatever the LAN holds open. When the bound is
  reached, the connection that has been idle longest (no request in progress) is
  closed to make room; only when every connection is busy with a request is the new
  one refused (503);
- at most ``max_connections_per_address`` from one peer address; beyond it a new
  connection gets a 503 and is closed;
- a request's head must arrive within ``header_timeout`` of its first byte (or of the
  connection's start, for the first request), so a peer that sends nothing or trickles
  its headers (slowloris) is cut. Idle keep-alive connections are closed by aiohttp
  after ``keepalive_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import ssl
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from gateway.settings import LocalSettings

log = logging.getLogger(__name__)

# Descriptors kept free for everything but the local server: serial ports, the store,
# the uplinks' sockets.
FD_RESERVE = 64
# How many connections one wake of the event loop accepts before the guard can close
# the excess (asyncio's "backlog" argument) ...
ACCEPT_BATCH = 16
# ... and the kernel's queue of connections waiting to be accepted, which holds no
# descriptor of ours: a burst of connects waits there instead of being dropped.
LISTEN_BACKLOG = 256
# Accepted sockets that may exist before the guard has seen them: a few batches.
ACCEPT_BURST = 4 * ACCEPT_BATCH
# Chunks of a request read above TLS before aiohttp's protocol is in place (one
# moment, between the handshake's end and start_tls returning).
MAX_EARLY_CHUNKS = 64
_BUSY_BODY = b'{"error":"too many connections; retry later"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
) % (len(_BUSY_BODY), _BUSY_BODY)


@dataclass(slots=True)
class ConnectionCounters:
    open: int = 0
    # Connections closed at once, by reason: "limit" (every slot busy), "per_address".
    refused: Counter[str] = field(default_factory=Counter)
    # Idle connections closed to make room for a new one.
    evicted: int = 0
    # Connections whose request head did not arrive within header_timeout.
    timed_out: int = 0
    # The bound applied (max_connections, lowered to fit the descriptor limit).
    limit: int = 0
    # Requests refused by HTTP status ("400" bad parameter, "401" token, "403" origin
    # or host).
    requests_refused: Counter[str] = field(default_factory=Counter)


def descriptor_room() -> int | None:
    """Descriptors this process may still open, or None when it has no limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 0
    return soft - in_use


def connection_limit(configured: int, room: int | None) -> int:
    """``configured``, lowered so ``FD_RESERVE`` and an accept burst stay free."""
    if room is None:
        return configured
    return max(1, min(configured, room - FD_RESERVE - ACCEPT_BURST))


class ConnectionGuard:
    """Counts, caps and times out the connections of one server (TLS handshakes included)."""

    def __init__(
        self,
        settings: LocalSettings,
        counters: ConnectionCounters,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._per_address = settings.max_connections_per_address
        self.header_timeout = settings.header_timeout
        self.tls = tls
        self.counters = counters
        counters.limit = connection_limit(settings.max_connections, descriptor_room())
        if counters.limit < settings.max_connections:
            log.warning(
                "local server: at most %d connections (max_connections = %d), so that %d "
                "file descriptors stay free under the process's limit; raise LimitNOFILE "
                "for more",
                counters.limit,
                settings.max_connections,
                FD_RESERVE,
            )
        self._by_address: Counter[str] = Counter()
        # Connections without a request in progress, longest idle first.
        self._idle: OrderedDict[GuardedConnection, None] = OrderedDict()
        # By the transport aiohttp sees (with TLS, the one above the handshake).
        self._by_transport: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self._admitted: set[GuardedConnection] = set()

    def factory(self, inner: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedConnection(self, inner)

    def of(self, request: web.Request) -> GuardedConnection | None:
        transport = request.transport
        return None if transport is None else self._by_transport.get(transport)

    def admit(self, conn: GuardedConnection) -> bool:
        counters = self.counters
        if self._by_address[conn.address] >= self._per_address:
            counters.refused["per_address"] += 1
            return False
        if counters.open >= counters.limit:
            if not self._idle:
                counters.refused["limit"] += 1
                return False
            oldest, _ = self._idle.popitem(last=False)
            counters.evicted += 1
            oldest.abort()
        self._by_address[conn.address] += 1
        self._admitted.add(conn)
        counters.open += 1
        return True

    def serving(self, conn: GuardedConnection, transport: asyncio.BaseTransport) -> None:
        """``conn`` hands ``transport`` to aiohttp: its requests are looked up by it."""
        self._by_transport[transport] = conn

    def release(self, conn: GuardedConnection) -> None:
        self._idle.pop(conn, None)
        if conn not in self._admitted:
            return
        self._admitted.discard(conn)
        if conn.transport is not None:
            self._by_transport.pop(conn.transport, None)
        self.counters.open -= 1
        self._by_address[conn.address] -= 1
        if not self._by_address[conn.address]:
            del self._by_address[conn.address]

    def set_idle(self, conn: GuardedConnection, idle: bool) -> None:
        if idle:
            self._idle[conn] = None
        else:
            self._idle.pop(conn, None)


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's checks and deadline.

    It receives the socket first, so a connection is counted and timed from its first
    moment; with TLS it then runs the handshake (``loop.start_tls``) and stays the
    protocol above it, the one aiohttp's is fed through.
    """

    def __init__(self, guard: ConnectionGuard, inner: Callable[[], asyncio.BaseProtocol]) -> None:
        self._guard = guard
        self._make_inner = inner
        self._inner: asyncio.Protocol | None = None
        # The socket's transport, and the one aiohttp uses (the same without TLS).
        self._raw: asyncio.Transport | None = None
        self.transport: asyncio.BaseTransport | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._in_request = False
        # Bytes above TLS that arrive before start_tls has returned to us.
        self._early: list[bytes] = []
        self.address = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.address = str(peer[0])
        if not self._guard.admit(self):
            if self._guard.tls is None:
                transport.write(_BUSY)
            transport.close()
            return
        self._guard.set_idle(self, True)
        self._arm()
        tls = self._guard.tls
        if tls is None:
            self._serve(transport)
            return
        # Nothing is read until start_tls has put its protocol in place.
        transport.pause_reading()
        self._handshake = asyncio.get_running_loop().create_task(
            self._start_tls(transport, tls), name="local-tls-handshake"
        )

    async def _start_tls(self, raw: asyncio.Transport, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            # The header deadline also bounds the handshake: it aborts the socket.
            secured = await loop.start_tls(raw, self, tls, server_side=True)
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError):
            # A failed handshake never reaches connection_lost above it.
            self._disarm()
            self._guard.release(self)
            return
        finally:
            self._handshake = None
        if secured is None:
            self._guard.release(self)
            return
        self._serve(secured)

    def _serve(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._guard.serving(self, transport)
        inner = self._make_inner()
        assert isinstance(inner, asyncio.Protocol)
        self._inner = inner
        inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            if self._handshake is not None and len(self._early) < MAX_EARLY_CHUNKS:
                self._early.append(data)
            return
        if not self._in_request and self._deadline is None:
            self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._guard.release(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def request_started(self) -> None:
        self._in_request = True
        self._disarm()
        self._guard.set_idle(self, False)

    def request_done(self) -> None:
        self._in_request = False
        self._guard.set_idle(self, True)

    def abort(self) -> None:
        if self._raw is not None:
            self._raw.abort()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        self._guard.counters.timed_out += 1
        self.abort()


GUARD_KEY = web.AppKey("connection_guard", ConnectionGuard)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tells the guard when a connection has a request in progress (no deadline, not idle)."""
    guard = request.app.get(GUARD_KEY)
    conn = None if guard is None else guard.of(request)
    if conn is None:
        return await handler(request)
    conn.request_started()
    try:
        return await handler(request)
    finally:
        conn.request_done()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a ``ConnectionGuard``."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
    ) -> None:
        # TLS is the guard's to run, after it has counted the connection.
        super().__init__(runner, ssl_context=guard.tls, backlog=ACCEPT_BATCH)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host or '0.0.0.0'}:{self._port}"  # noqa: S104 - a name only

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server),
            self._host or None,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
        # asyncio listens with the batch size; the kernel's queue may be longer (a dup
        # of the descriptor changes the one socket).
        for listening in self._server.sockets:
            with socket.fromfd(listening.fileno(), listening.family, listening.type) as sock:
                sock.listen(LISTEN_BACKLOG)
