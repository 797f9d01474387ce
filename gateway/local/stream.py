"""The live stream: committed readings fanned out to WebSocket clients, with replay.

Each commit batch is turned into one message per distinct device filter, built from
the stored payload bytes and framed once; the same frame bytes are written to every
idle client with that filter, straight to its socket. A client whose socket is backed up
gets the message through its own bounded queue and a sender task that waits for the
socket. A client that falls further behind loses readings from its queue and is told so
with a ``gap`` message; one whose socket stops taking data is closed with 1013, so it
cannot hold memory or slow anyone else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from gateway.errors import StoreError
from gateway.globs import check_device_glob, glob_matcher
from gateway.interfaces import ReadingLog
from gateway.local.fanout_pace import FanoutPace
from gateway.rate import TokenBucket
from gateway.reading import StoredReading, join_payloads
from gateway.settings import LocalSettings

logger = logging.getLogger(__name__)

# Readings per message: a large commit (a backlog after a stall) is split so that
# messages stay well under clients' size limits (aiohttp's default is 4 MiB).
MESSAGE_READINGS = 1000
# A send that makes no progress for this long means the client is stuck.
SEND_TIMEOUT = 10.0
# Bound on the closing handshake with a client that may not be reading.
CLOSE_TIMEOUT = 2.0
# A closed connection whose peer still takes no data is cut after this long.
ABANDON_AFTER = 30.0
# Above this much unsent data in a client's transport, readings go through its
# queue and sender (which waits for the socket) instead of being written directly.
DIRECT_WRITE_LIMIT = 64 * 1024
PONG = b'{"type":"pong"}'


def readings_message(readings: Sequence[StoredReading]) -> bytes:
    return b'{"type":"readings","readings":' + join_payloads([r.payload for r in readings]) + b"}"


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame (RFC 6455, 5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def _json(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(slots=True)
class StreamCounters:
    clients: int = 0
    gaps: int = 0
    closed_slow: int = 0
    inbound_errors: int = 0
    refused_busy: int = 0


@dataclass(frozen=True, slots=True)
class _Batch:
    """Readings of one commit for one device filter, and their message, shared by clients."""

    readings: Sequence[StoredReading]
    message: bytes
    # The message framed once for every client (None when frames are compressed per client).
    frame: bytes | None
    # The first and last seq, as plain fields: read once per client per commit.
    first: int
    last: int


def _messages(readings: Sequence[StoredReading], framed: bool) -> list[_Batch]:
    """A commit batch as messages of at most ``MESSAGE_READINGS`` readings each."""
    out = []
    for start in range(0, len(readings), MESSAGE_READINGS):
        part = readings[start : start + MESSAGE_READINGS]
        message = readings_message(part)
        frame = text_frame(message) if framed else None
        out.append(_Batch(part, message, frame, part[0].seq, part[-1].seq))
    return out


class StreamClient:
    """One connected client: its bounded queue, the gap it missed, and its sender."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        *,
        device_glob: str | None,
        queue_limit: int,
        counters: StreamCounters,
        send_timeout: float,
    ) -> None:
        self.ws = ws
        self._transport = request.transport
        self._peer = request.remote
        self.device_glob = device_glob
        # Compiled once for this client; None matches every device.
        self.matches: Callable[[str], bool] | None = (
            None if device_glob is None else glob_matcher(device_glob)
        )
        self._limit = max(1, queue_limit)
        self._counters = counters
        self._send_timeout = send_timeout
        self._queue: deque[_Batch] = deque()
        self._control: deque[bytes] = deque()
        self._gap: list[int] | None = None
        self._wake = asyncio.Event()
        self._replaying = False
        # While replaying, live batches that did not fit were dropped from the queue:
        # the replay must read the log at least this far to cover them.
        self._replay_floor = 0
        self._sent_upto = 0
        # True while the sender waits for work: a batch may then skip the queue.
        self._idle = False

    def offer(self, batch: _Batch) -> None:
        """Queue a live batch; never blocks (called from the store's commit listener)."""
        last = batch.last
        if last <= self._sent_upto:
            # The replay read it from the log before the listener offered it here.
            return
        # Checked first, once per client per commit: with a thousand clients, the
        # time to reach the last one is the stream's latency.
        if self._idle and batch.frame is not None and self._gap is None and not self._queue:
            transport = self._transport
            if (
                transport is not None
                and not transport.is_closing()
                and transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT
                and not self.ws.closed
            ):
                # Fast path, most of the time: the same frame bytes go straight to every
                # idle client's socket, without waking a task per client. (A batch
                # queued just before, whose sender has not woken yet, goes first.)
                transport.write(batch.frame)
                self._sent_upto = last
                return
        if len(self._queue) >= self._limit or self._gap is not None:
            if self._replaying:
                # These readings are in the log: the replay reads them instead.
                self._replay_floor = batch.last
                self._queue.clear()
            elif self._gap is None:
                self._gap = [batch.first, batch.last]
                self._counters.gaps += 1
            else:
                self._gap[1] = batch.last
            return
        self._queue.append(batch)
        self._wake.set()

    def send_control(self, message: bytes) -> None:
        """Queue a small reply (pong, error); these bypass the reading queue's bound."""
        if len(self._control) < self._limit:
            self._control.append(message)
            self._wake.set()

    async def run(self, hello: bytes, log: ReadingLog, since: int | None) -> None:
        """Send hello, the replay, then live messages until the client goes or gets stuck."""
        try:
            await self._send(hello)
            if since is not None:
                await self._replay(log, since)
            await self._live()
        except TimeoutError:
            self._counters.closed_slow += 1
            logger.warning("closing stuck stream client %s", self._peer)
            await self.close(WSCloseCode.TRY_AGAIN_LATER, b"client too slow")
        except ConnectionError:
            # The peer went away mid-send; the reader side ends the connection.
            return
        except StoreError as exc:
            logger.error("stream replay failed: %s", exc)
            await self.close(WSCloseCode.INTERNAL_ERROR, b"the log cannot be read")

    async def _send(self, message: bytes) -> None:
        async with asyncio.timeout(self._send_timeout):
            await self.ws.send_frame(message, WSMsgType.TEXT)

    async def _replay(self, log: ReadingLog, since: int) -> None:
        self._replaying = True
        cursor = since
        while True:
            page = await log.read_after(cursor, MESSAGE_READINGS, self.device_glob)
            # What the live queue holds from here on needs no replay.
            live_from = self._queue[0].first if self._queue else None
            reached_live = live_from is not None and bool(page) and page[-1].seq >= live_from
            if live_from is not None and reached_live:
                page = [r for r in page if r.seq < live_from]
            if page:
                await self._send(readings_message(page))
                cursor = page[-1].seq
                self._sent_upto = cursor
            # The live queue may have overflowed while that page was being sent: then it
            # was cleared, and the log must be read up to the floor it left.
            if cursor < self._replay_floor:
                continue
            if reached_live or len(page) < MESSAGE_READINGS:
                break
        self._replaying = False

    async def _live(self) -> None:
        while True:
            if self._control:
                await self._send(self._control.popleft())
            elif self._queue:
                batch = self._queue.popleft()
                if batch.last <= self._sent_upto:
                    continue
                message = batch.message
                if batch.first <= self._sent_upto:
                    # Straddles the replay's end: send only the part not replayed.
                    message = readings_message(
                        [r for r in batch.readings if r.seq > self._sent_upto]
                    )
                await self._send(message)
                self._sent_upto = batch.last
            elif self._gap is not None:
                first, last = self._gap
                # Cleared before the await so batches arriving meanwhile are queued after it.
                self._gap = None
                # Never announce as missed what the replay already sent.
                first = max(first, self._sent_upto + 1)
                if first <= last:
                    await self._send(_json({"type": "gap", "from": first, "to": last}))
                    self._sent_upto = last
            else:
                self._wake.clear()
                self._idle = True
                try:
                    await self._wake.wait()
                finally:
                    self._idle = False

    async def close(self, code: int, message: bytes) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=message, drain=False)
        except TimeoutError:
            # The close frame sits in the transport's buffer, flushed if the peer reads
            # again; a peer that never does is cut so it cannot hold the socket forever.
            if self._transport is not None:
                transport = self._transport
                asyncio.get_running_loop().call_later(ABANDON_AFTER, transport.abort)


class StreamHub:
    """Every connected client, fed by the store's commit listener."""

    def __init__(
        self, gateway_id: str, log: ReadingLog, settings: LocalSettings, send_timeout: float
    ) -> None:
        self._gateway_id = gateway_id
        self._log = log
        self._settings = settings
        self._send_timeout = send_timeout
        self._clients: set[StreamClient] = set()
        self._opening = 0
        self.counters = StreamCounters()
        self.pace = FanoutPace()

    def on_commit(self, batch: Sequence[StoredReading]) -> None:
        if not self._clients or not batch:
            return
        started = time.perf_counter()
        # Messages built once per distinct filter, shared by every client with that filter.
        by_filter: dict[str | None, list[_Batch]] = {}
        for client in self._clients:
            glob = client.device_glob
            shared = by_filter.get(glob)
            if shared is None:
                matches = client.matches
                readings = batch if matches is None else [r for r in batch if matches(r.device)]
                shared = by_filter[glob] = _messages(readings, not self._settings.compress)
            for message in shared:
                client.offer(message)
        clients = len(self._clients)
        self.pace.timed(time.perf_counter() - started, clients)
        self._log.set_watched(self.pace.spacing(clients))

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Refuse beyond ``max_clients``, else upgrade and serve one client until it goes.

        The caller has checked the token and the origin.
        """
        requested = request.query.get("device", "").strip()
        # "*" matches every device: such clients share the unfiltered messages.
        device_glob = None if requested in {"", "*"} else _device_glob(requested)
        since = _since(request)
        settings = self._settings
        if len(self._clients) + self._opening >= settings.max_clients:
            self.counters.refused_busy += 1
            raise web.HTTPServiceUnavailable(
                text=_json({"error": "too many stream clients; retry later"}).decode(),
                content_type="application/json",
                headers={"Retry-After": "5"},
            )
        ws = web.WebSocketResponse(
            heartbeat=settings.heartbeat or None,
            compress=settings.compress,
            max_msg_size=settings.max_inbound_bytes,
            timeout=CLOSE_TIMEOUT,
        )
        # Counted while the handshake is under way, so concurrent upgrades cannot
        # overshoot max_clients.
        self._opening += 1
        try:
            await ws.prepare(request)
        finally:
            self._opening -= 1
        client = StreamClient(
            request,
            ws,
            device_glob=device_glob,
            queue_limit=settings.client_queue,
            counters=self.counters,
            send_timeout=self._send_timeout,
        )
        # Subscribed before last_seq is read and before the replay reads the log,
        # so every later commit reaches the client's queue.
        self._clients.add(client)
        self._count_clients()
        hello = _json(
            {"type": "hello", "gateway": self._gateway_id, "last_seq": self._log.last_seq}
        )
        try:
            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(
                    client.run(hello, self._log, since), name=f"stream-send-{id(client)}"
                )
                reader = tg.create_task(
                    self._read_inbound(client), name=f"stream-read-{id(client)}"
                )
                # Either side ends the connection: the peer left or closed (reader), or the
                # client was closed as stuck (sender), possibly with the peer unaware.
                await asyncio.wait((sender, reader), return_when=asyncio.FIRST_COMPLETED)
                sender.cancel()
                reader.cancel()
        finally:
            self._clients.discard(client)
            self._count_clients()
        return ws

    def _count_clients(self) -> None:
        clients = self.counters.clients = len(self._clients)
        self._log.set_watched(self.pace.spacing(clients))

    async def _read_inbound(self, client: StreamClient) -> None:
        rate = self._settings.max_inbound_per_second
        # Bursts of up to a second's worth.
        bucket = TokenBucket(rate, burst=max(1.0, rate)) if rate > 0 else None
        async for msg in client.ws:
            if msg.type is WSMsgType.ERROR:
                # aiohttp has closed the connection already (1009 for an oversized message,
                # 1002 for a broken frame).
                self.counters.inbound_errors += 1
                return
            if bucket is not None and not bucket.try_take():
                self.counters.inbound_errors += 1
                await client.close(WSCloseCode.POLICY_VIOLATION, b"too many messages")
                return
            reply = self._answer(msg)
            client.send_control(reply)

    def _answer(self, msg: WSMessage) -> bytes:
        if msg.type is WSMsgType.TEXT:
            try:
                request = json.loads(msg.data)
            except ValueError:
                return self._error("not JSON")
            except RecursionError:
                # Nesting deeper than the interpreter's stack: refused, not a crash.
                return self._error("nested too deeply")
            if isinstance(request, dict) and request.get("type") == "ping":
                return PONG
            return self._error('unknown message; only {"type": "ping"} is accepted')
        return self._error("binary messages are not accepted")

    def _error(self, text: str) -> bytes:
        self.counters.inbound_errors += 1
        return _json({"type": "error", "error": text})

    async def close_all(
        self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"server stopping"
    ) -> None:
        """Close every client: the server is going away (on shutdown), or the token changed."""
        async with asyncio.TaskGroup() as tg:
            for client in list(self._clients):
                tg.create_task(client.close(code, message))


# The log's seqs are SQLite integers.
MAX_SEQ = 2**63 - 1
_SEQ = re.compile(r"-?[0-9]{1,19}")


def _bad_request(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=_json({"error": text}).decode(), content_type="application/json")


def _device_glob(requested: str) -> str:
    try:
        return check_device_glob(requested)
    except ValueError as exc:
        raise _bad_request(f"device {exc}") from None


def _since(request: web.Request) -> int | None:
    raw = request.query.get("since")
    if raw is None or raw == "":
        return None
    if not _SEQ.fullmatch(raw) or int(raw) > MAX_SEQ:
        raise _bad_request(f"since must be an integer seq up to {MAX_SEQ}")
    # Before the first reading: the whole log.
    return max(0, int(raw))
