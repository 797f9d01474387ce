"""A lane: one position of an uplink in the log, with its own durable cursor.

An uplink reads the log in one lane, or two when it carries high-priority readings
(``gateway.uplinks.route``). A lane hands out the readings it carries after a
position, from the commit listener's tail when it can (no read of the log) or from
the log; readings it does not carry are passed over, so its cursor moves past them
once what it sent before them is acknowledged and retention is never pinned by them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from gateway.interfaces import ReadingLog
from gateway.reading import StoredReading
from gateway.uplinks.tail import LiveTail


class Lane:
    def __init__(
        self,
        cursor: str,
        carries: Callable[[StoredReading], bool],
        tail_limit: int,
        devices: tuple[str, ...] | None = None,
    ) -> None:
        self.cursor = cursor  # the durable cursor's name in the store
        self.carries = carries
        # Only these devices' rows are read from the log (the priority lane's); None: all.
        self.devices = devices
        # Highest seq below which everything is resolved (may be ahead of the durable
        # cursor while an ack to the log is under way), and the durable cursor.
        self.confirmed = 0
        self.acked_seq = 0
        self.ack_wanted = asyncio.Event()
        # The carried readings of the newest commits, and the last seq of the newest
        # commit the listener was handed.
        self.tail = LiveTail(0, tail_limit)
        self.seen = 0
        # Seqs found gone from the log when this lane came to read them.
        self.lost = 0

    def start(self, last_seq: int) -> None:
        """Hold the commits after ``last_seq`` from now on (register ``on_commit`` too)."""
        self.tail.restart(last_seq)
        self.seen = last_seq

    def on_commit(self, batch: Sequence[StoredReading]) -> None:
        """The store's commit listener."""
        if not batch:
            return
        carries = self.carries
        carried = [r for r in batch if carries(r)]
        if carried:
            self.tail.on_commit(carried)
        self.seen = batch[-1].seq

    async def read(self, log: ReadingLog, pos: int, wanted: int) -> tuple[list[StoredReading], int]:
        """Up to about ``wanted`` carried readings after ``pos``, and the seq up to which
        the answer covers the log (every carried reading up to it is in the list)."""
        tail = self.tail
        if tail.covers(pos):
            readings = tail.take(pos, wanted)
            return readings, readings[-1].seq
        if pos >= tail.after and self.seen > pos:
            # The tail holds every carried reading after ``after``: none up to ``seen``.
            return [], self.seen
        last_seq = log.last_seq
        carries = self.carries
        if self.devices is not None:
            rows = await log.read_devices_after(pos, wanted, self.devices)
            covered = rows[-1].seq if len(rows) >= wanted else last_seq
            return [r for r in rows if carries(r)], covered
        rows = await log.read_after(pos, wanted)
        # Every seq up to last_seq was committed; those missing before the first row
        # read (or all of them) were deleted before this lane sent them.
        if rows:
            self.lost += max(0, rows[0].seq - pos - 1)
            covered = rows[-1].seq
        else:
            self.lost += max(0, last_seq - pos)
            covered = last_seq
        return [r for r in rows if carries(r)], covered
