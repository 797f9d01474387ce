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

from gateway.errors import StoreError
from gateway.interfaces import ReadingLog
from gateway.reading import StoredReading
from gateway.uplinks.route import PRIORITY_SUFFIX, PriorityRules, Selection
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

    def confirm(self, seq: int) -> None:
        """Everything up to ``seq`` is resolved: the ack loop moves the durable cursor."""
        self.confirmed = seq
        self.ack_wanted.set()

    async def scout(self, log: ReadingLog, wanted: int) -> None:
        """Move the cursor over what this lane does not carry, up to the first reading it
        does (which waits for a connection); run while the lane has none.

        During an outage the priority lane thus stays at its first unsent alarm rather
        than where the outage began: on reconnect it need not read the whole backlog
        before the alarms (it reads only the rows of its devices, without an index).
        """
        try:
            while True:
                pos = self.confirmed
                if log.last_seq <= pos:
                    await log.wait_beyond(pos)
                readings, covered = await self.read(log, pos, wanted)
                if readings:
                    # Nothing it carries comes before the first reading it was handed.
                    if readings[0].seq - 1 > pos:
                        self.confirm(readings[0].seq - 1)
                    return
                if covered > pos:
                    self.confirm(covered)
        except StoreError:
            # Closed, or a read failed: delivery reads again from the cursor anyway.
            return

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


def lanes_for(name: str, selection: Selection | None, tail_limit: int) -> list[Lane]:
    """An uplink's lanes: the priority lane (when it carries a device that may send a
    high-priority reading), cursor ``NAME:priority``, then the normal lane, ``NAME``."""
    selection = selection or Selection(("*",), PriorityRules())
    carries_device = selection.carries_device
    high = selection.high
    priority_devices = selection.priority_devices()
    if not priority_devices:
        return [Lane(name, lambda r: carries_device(r.device), tail_limit)]
    return [
        Lane(
            name + PRIORITY_SUFFIX,
            lambda r: carries_device(r.device) and high(r),
            tail_limit,
            devices=priority_devices,
        ),
        Lane(name, lambda r: carries_device(r.device) and not high(r), tail_limit),
    ]


def split_in_flight(lanes: Sequence[Lane], limit: int) -> list[tuple[Lane, int]]:
    """Each lane's share of an uplink's in-flight limit: a quarter (at least one) is kept
    for the priority lane, so a backlog never holds high-priority readings back."""
    if len(lanes) == 1:
        return [(lanes[0], limit)]
    priority = max(1, limit // 4)
    return [(lanes[0], priority), (lanes[1], max(1, limit - priority))]


async def register_lanes(
    log: ReadingLog, lanes: Sequence[Lane], *, start_now: bool, best_effort: bool
) -> None:
    """Register each lane's durable cursor with the log (retention waits for both) and
    put each lane at it."""
    normal = lanes[-1]
    normal.confirmed = normal.acked_seq = await log.register_consumer(
        normal.cursor, start_now=start_now, best_effort=best_effort
    )
    if len(lanes) > 1:
        # A new priority lane starts where the normal lane is, never later: the
        # normal lane passes high-priority readings over from now on, and has sent
        # those before its cursor.
        priority = lanes[0]
        priority.confirmed = priority.acked_seq = await log.register_consumer(
            priority.cursor, start_at=normal.confirmed, best_effort=best_effort
        )
