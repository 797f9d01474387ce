"""The live stream's hub: committed readings fanned out to every WebSocket client.

Each commit batch is turned into one message per distinct device filter, built from
the stored payload bytes and framed once; the same frame bytes are offered to every
client with that filter (``client.py`` says how each one sends them). Each sweep over
the clients is timed, and its cost paces the store's commits (``fanout_pace.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from gateway.globs import check_device_glob
from gateway.interfaces import ReadingLog
from gateway.local.fanout_pace import FanoutPace
from gateway.local.stream.client import CLOSE_TIMEOUT, StreamClient, StreamCounters
from gateway.local.stream.frames import PONG, SharedMessage, commit_messages, json_message
from gateway.rate import TokenBucket
from gateway.reading import StoredReading
from gateway.settings import LocalSettings


class StreamHub:
    """Every connected client, fed by the store's commit listener."""

    def __init__(
        self, gateway_id: str, readings: ReadingLog, settings: LocalSettings, send_timeout: float
    ) -> None:
        self._gateway_id = gateway_id
        self._readings = readings
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
        by_filter: dict[str | None, list[SharedMessage]] = {}
        for client in self._clients:
            glob = client.device_glob
            shared = by_filter.get(glob)
            if shared is None:
                matches = client.matches
                readings = batch if matches is None else [r for r in batch if matches(r.device)]
                shared = by_filter[glob] = commit_messages(readings, not self._settings.compress)
            for message in shared:
                client.offer(message)
        clients = len(self._clients)
        self.pace.timed(time.perf_counter() - started, clients)
        self._readings.set_watched(self.pace.spacing(clients))

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
                text=json_message({"error": "too many stream clients; retry later"}).decode(),
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
        hello = json_message(
            {"type": "hello", "gateway": self._gateway_id, "last_seq": self._readings.last_seq}
        )
        try:
            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(
                    client.run(hello, self._readings, since), name=f"stream-send-{id(client)}"
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
        self._readings.set_watched(self.pace.spacing(clients))

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
        return json_message({"type": "error", "error": text})

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
    return web.HTTPBadRequest(
        text=json_message({"error": text}).decode(), content_type="application/json"
    )


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
