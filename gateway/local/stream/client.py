"""One stream client: its bounded queue, the replay from the log, and its sender.

A live message goes straight to an idle client's socket when the socket takes it; a
client whose socket is backed up gets it through its own bounded queue and a sender task
that waits for the socket. A client that falls further behind loses readings from its
queue and is told so with a ``gap`` message; one whose socket stops taking data is closed
with 1013, so it cannot hold memory or slow anyone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.errors import StoreError
from gateway.globs import glob_matcher
from gateway.interfaces import ReadingLog
from gateway.local.stream.frames import (
    MESSAGE_READINGS,
    SharedMessage,
    json_message,
    readings_message,
)

log = logging.getLogger(__name__)

# A send that makes no progress for this long means the client is stuck.
SEND_TIMEOUT = 10.0
# Bound on the closing handshake with a client that may not be reading.
CLOSE_TIMEOUT = 2.0
# A closed connection whose peer still takes no data is cut after this long.
ABANDON_AFTER = 30.0
# Above this much unsent data in a client's transport, readings go through its
# queue and sender (which waits for the socket) instead of being written directly.
DIRECT_WRITE_LIMIT = 64 * 1024


@dataclass(slots=True)
class StreamCounters:
    clients: int = 0
    gaps: int = 0
    closed_slow: int = 0
    inbound_errors: int = 0
    refused_busy: int = 0


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
        self._queue: deque[SharedMessage] = deque()
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

    def offer(self, batch: SharedMessage) -> None:
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

    async def run(self, hello: bytes, readings: ReadingLog, since: int | None) -> None:
        """Send hello, the replay, then live messages until the client goes or gets stuck."""
        try:
            await self._send(hello)
            if since is not None:
                await self._replay(readings, since)
            await self._live()
        except TimeoutError:
            self._counters.closed_slow += 1
            log.warning("closing stuck stream client %s", self._peer)
            await self.close(WSCloseCode.TRY_AGAIN_LATER, b"client too slow")
        except ConnectionError:
            # The peer went away mid-send; the reader side ends the connection.
            return
        except StoreError as exc:
            log.error("stream replay failed: %s", exc)
            await self.close(WSCloseCode.INTERNAL_ERROR, b"the log cannot be read")

    async def _send(self, message: bytes) -> None:
        async with asyncio.timeout(self._send_timeout):
            await self.ws.send_frame(message, WSMsgType.TEXT)

    async def _replay(self, readings: ReadingLog, since: int) -> None:
        self._replaying = True
        cursor = since
        while True:
            page = await readings.read_after(cursor, MESSAGE_READINGS, self.device_glob)
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
                    await self._send(json_message({"type": "gap", "from": first, "to": last}))
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
