"""The batches one WebSocket connection has sent and the server has not yet acknowledged.

Pure code, no I/O. Batches cover contiguous seq ranges, in order; the server
acknowledges cumulatively by the ``last_seq`` of a batch, so an ack resolves every
batch up to it, and the cursor may move to that seq. An ack that is not the end of
a batch in flight breaks the protocol (the uplink then drops the connection).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from gateway.uplinks.ws_protocol import ProtocolError


@dataclass(frozen=True, slots=True)
class SentBatch:
    first_seq: int
    last_seq: int
    count: int  # readings in it (fewer than the range where the log has holes)
    sent_at: float  # monotonic time


class Flight:
    def __init__(self, confirmed: int, limit: int) -> None:
        self.read_pos = confirmed  # the last seq put in a batch
        self.limit = max(1, limit)
        self._batches: deque[SentBatch] = deque()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def oldest_sent_at(self) -> float | None:
        return self._batches[0].sent_at if self._batches else None

    async def wait_for_room(self) -> None:
        while len(self._batches) >= self.limit:
            self._room.clear()
            await self._room.wait()

    def sent(self, last_seq: int, count: int, now: float) -> SentBatch:
        """A batch of the readings after ``read_pos`` up to ``last_seq`` goes out."""
        batch = SentBatch(self.read_pos + 1, last_seq, count, now)
        self._batches.append(batch)
        self.read_pos = last_seq
        return batch

    def ack(self, seq: int) -> list[SentBatch]:
        """The server committed everything up to ``seq``: the batches that resolves."""
        if not any(b.last_seq == seq for b in self._batches):
            raise ProtocolError(f"ack of seq {seq}, which ends no batch in flight")
        resolved: list[SentBatch] = []
        while self._batches and self._batches[0].last_seq <= seq:
            resolved.append(self._batches.popleft())
        self._room.set()
        return resolved
