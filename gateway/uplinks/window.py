"""The in-flight window of one connection: what is published and not yet resolved.

A message is *resolved* when the broker acknowledged it with a success code,
or when it was refused for good and its readings went to the dead letters.
Until then it holds a slot, also while it waits to be re-sent after a failure
code, so that a broker refusing one message cannot make the uplink read (and
hold in memory) an unbounded amount of the log behind it.
"""

from __future__ import annotations

import asyncio

from gateway.uplinks.batching import AckOrder, TelemetryMessage


class InFlightWindow:
    def __init__(self, confirmed: int, limit: int) -> None:
        self.acks = AckOrder(confirmed)
        self.read_pos = confirmed  # highest seq read from the log
        self.limit = max(1, limit)
        self.in_flight = 0
        self.retry_ready: asyncio.Queue[TelemetryMessage] = asyncio.Queue()
        self.closed = False
        self._changed = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def room(self) -> int:
        """Messages that may be published now (also bounds the read batches held)."""
        return min(self.limit - self.in_flight, self.limit - self.acks.open_batches)

    async def wait_for_room(self) -> None:
        """Until another read of the log may start."""
        while self.room <= 0:
            self._changed.clear()
            await self._changed.wait()

    async def wait_for_slot(self) -> None:
        """Until the next message of a read already made may go out.

        Only the messages in flight count here: the read's own batch is open until
        all of its messages are resolved, so counting it would never let a window
        of one send a read's second message.
        """
        while self.in_flight >= self.limit:
            self._changed.clear()
            await self._changed.wait()

    def take_slot(self) -> None:
        """A message outside the log (the status) is published on the connection."""
        self.in_flight += 1

    def free_slot(self) -> None:
        self.in_flight -= 1
        self._changed.set()

    def resolved(self, message: TelemetryMessage) -> bool:
        """``message`` is resolved; True when ``acks.confirmed`` moved."""
        moved = self.acks.resolve(message)
        self.free_slot()
        return moved

    def retry_later(self, delay: float, message: TelemetryMessage) -> None:
        """Queue ``message`` on ``retry_ready`` after ``delay`` seconds; it keeps its slot."""
        loop = asyncio.get_running_loop()

        def due() -> None:
            self._timers.discard(handle)
            self.retry_ready.put_nowait(message)

        handle = loop.call_later(delay, due)
        self._timers.add(handle)

    def close(self) -> None:
        """The connection is gone: forget pending retries (all is re-read from the cursor)."""
        self.closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
