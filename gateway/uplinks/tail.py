"""The newest committed readings, kept from the store's commit listener for a caught-up reader.

A consumer that keeps up with the log does not need to read it back: the listener
has just been handed every committed reading, in seq order. ``LiveTail`` holds
them, bounded, and says when it covers a reader's position, so that one read of
the log (a hop to the reader thread and back) is saved per message at low rates.

The seam is the same as the local stream's replay/live one: the tail holds every
committed reading with seq in (``after``, newest]. A reader at ``pos >= after``
takes its readings from here; a reader behind ``after`` reads the log until it
passes ``after``. When the tail overflows (the consumer is behind or disconnected)
it forgets everything and starts again after the newest seq it was handed, so a
consumer behind it falls back to reading the log, never to a gap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from gateway.reading import StoredReading


class LiveTail:
    def __init__(self, after: int, limit: int) -> None:
        # Every committed reading with seq in (after, newest] is in _readings.
        self.after = after
        self.limit = max(1, limit)
        self._readings: deque[StoredReading] = deque()

    def on_commit(self, batch: Sequence[StoredReading]) -> None:
        """The store's commit listener: batches come in seq order, each after the last."""
        if not batch:
            return
        if len(self._readings) + len(batch) > self.limit:
            self.restart(batch[-1].seq)
            return
        self._readings.extend(batch)

    def restart(self, after: int) -> None:
        """Forget everything held; hold what is committed after ``after`` from now on."""
        self._readings.clear()
        self.after = after

    def covers(self, pos: int) -> bool:
        """True when every committed reading after ``pos`` that was announced is here."""
        return pos >= self.after and bool(self._readings) and self._readings[-1].seq > pos

    def take(self, pos: int, limit: int) -> list[StoredReading]:
        """Up to ``limit`` readings after ``pos`` (which ``covers``); forgets those up to them."""
        readings = self._readings
        while readings and readings[0].seq <= pos:
            readings.popleft()
        taken = [readings.popleft() for _ in range(min(limit, len(readings)))]
        if taken:
            self.after = taken[-1].seq
        return taken
