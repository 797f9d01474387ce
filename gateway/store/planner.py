"""What the writer's next transaction will do, given what waits: no I/O here.

``Waiting`` holds what the writer has taken from the ingress and not yet committed
(samples, dead letters, acks, registrations), applies the bounds on what memory holds
and the overflow policy, and plans each transaction (``TransactionPlan``): how much
it takes, which acks may go with it, and, after a full disk, how it shrinks until
what still fits is committed. The writer runs the plan (``sql``) and, only once it is
committed, settles it here.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.reading import DeadLetter, Sample, StoredReading, encode
from gateway.settings import Overflow
from gateway.store import schema

# Upper bound of what one inserted row adds to the pages in use beyond its payload and
# device (ts, seq, cell header and pointer, with slack); doubled, and a few pages per
# commit for splits, so that between exact measurements the estimate never falls short.
ROW_OVERHEAD = 64
COMMIT_PAGES = 4

T = TypeVar("T")

# A row of the readings table: seq, ts, device, payload.
Row = tuple[int, float, str, bytes]


@dataclass(slots=True)
class TransactionPlan:
    """What one transaction will do and, filled in as it runs, what it did; applied to
    the writer's state only once committed."""

    samples: list[Sample]
    dead_letters: list[DeadLetter]
    acks: dict[str, int]
    registers: list[str]
    rows: list[Row] = field(default_factory=list)
    readings: list[StoredReading] = field(default_factory=list)
    last_seq: int = 0
    dropped: int = 0  # unsent readings deleted by bounds, or samples refused
    depth_delta: int = 0
    rejected: bool = False
    dropped_total: int = 0  # as written to the meta table
    trimmed: bool = False  # rows were deleted
    unencodable: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Totals:
    """The totals the meta table keeps (besides the last seq)."""

    dropped: int
    dead_letters: int
    dead_letters_lost: int
    reserved: int  # the seq floor's copy


@dataclass(frozen=True, slots=True)
class LogState:
    """What the writer knows of the log as a transaction begins."""

    last_seq: int
    cursors: dict[str, int]
    active: set[str]  # consumers registered since open
    depth: int
    in_grace: bool  # persisted cursors of consumers not registered yet still hold
    page_size: int
    used_bound: int  # at least the bytes in pages in use
    retention_chunk: int  # rows retention may delete in this transaction
    totals: Totals
    written: Totals  # as last written to the meta table


@dataclass(frozen=True, slots=True)
class Overflowed:
    """What ``Waiting.bound`` let go: samples dropped, dead letters whose raw bytes
    are lost (each still counts as a dead letter)."""

    samples: int = 0
    dead_letters: int = 0


class Waiting:
    """What the writer holds until it is committed, and the plan of the next commit."""

    def __init__(self, *, max_samples: int, max_dead_letters: int, max_batch: int) -> None:
        self.max_samples = max_samples
        self.max_dead_letters = max_dead_letters
        self.max_batch = max_batch
        self.samples: deque[Sample] = deque()
        self.dead_letters: deque[DeadLetter] = deque()
        self.acks: dict[str, int] = {}  # per consumer, the highest ack not yet committed
        # Per ack, the dead letters taken before it: a refused reading's dead letter must
        # be committed before (or with) the ack that lets the cursor pass the reading.
        self._ack_after: dict[str, int] = {}
        self._dead_taken = 0
        self._dead_settled = 0  # committed, or lost and counted
        self.registers: list[str] = []
        # How much one transaction takes: halved after a full disk, grown back with
        # each commit that succeeds.
        self.sample_limit = max_batch
        self.dead_letter_limit = max_dead_letters

    @property
    def has_data(self) -> bool:
        """Samples or dead letters wait (acks and registrations do not count)."""
        return bool(self.samples or self.dead_letters)

    # -- taking in -----------------------------------------------------------------

    def add_samples(self, samples: Iterable[Sample]) -> None:
        self.samples.extend(samples)

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)
        self._dead_taken += 1

    def add_ack(self, name: str, seq: int) -> None:
        self.acks[name] = max(seq, self.acks.get(name, 0))
        self._ack_after[name] = self._dead_taken

    def forget(self, name: str) -> None:
        """A released consumer: its acks not yet committed are dropped."""
        self.acks.pop(name, None)
        self._ack_after.pop(name, None)

    def add_register(self, name: str) -> None:
        self.registers.append(name)

    def bound(self, overflow: Overflow) -> Overflowed:
        """Hold at most ``max_samples`` samples (the overflow policy chooses which go)
        and ``max_dead_letters`` dead letters (the oldest go)."""
        excess = len(self.samples) - self.max_samples
        dropped = max(excess, 0)
        drop = self.samples.popleft if overflow == "drop_oldest" else self.samples.pop
        for _ in range(dropped):
            drop()
        lost = 0
        while len(self.dead_letters) > self.max_dead_letters:
            self.dead_letters.popleft()
            lost += 1
        self._dead_settled += lost
        return Overflowed(dropped, lost)

    def drain(self) -> Overflowed:
        """Let go of every sample and dead letter held (the writer is ending)."""
        gone = Overflowed(len(self.samples), len(self.dead_letters))
        self.samples.clear()
        self.dead_letters.clear()
        return gone

    # -- planning ------------------------------------------------------------------

    def plan(self) -> TransactionPlan:
        """The next transaction: as much as the limits let it take."""
        samples = _first(self.samples, self.sample_limit)
        dead_letters = _first(self.dead_letters, self.dead_letter_limit)
        return TransactionPlan(
            samples=samples,
            dead_letters=dead_letters,
            acks=self.ready_acks(len(dead_letters)),
            registers=list(self.registers),
        )

    def upkeep(self) -> TransactionPlan:
        """A transaction of acks and registrations alone: while commits fail, freeing
        space must not depend on the readings that do not fit yet."""
        return TransactionPlan([], [], self.ready_acks(0), list(self.registers))

    def ready_acks(self, dead_letters: int) -> dict[str, int]:
        """The acks that may commit with ``dead_letters`` more dead letters: none lets a
        cursor pass a refused reading whose dead letter would stay in memory only."""
        settled = self._dead_settled + dead_letters
        return {n: s for n, s in self.acks.items() if self._ack_after[n] <= settled}

    def shrink(self, failed: TransactionPlan) -> bool:
        """After ``failed`` did not fit on a full disk, plan a smaller one; False when
        there is nothing smaller to try.

        Whatever still fits is committed (and a bound that is reached then applies):
        samples first, dead letters never holding them back; then the dead letters with
        the acks that wait for them (retention in the same transaction may make their
        room), halved likewise.
        """
        if failed.samples and failed.dead_letters:
            self.dead_letter_limit = 0
        elif len(failed.samples) > 1:
            self.sample_limit = len(failed.samples) // 2
        elif failed.samples and self.dead_letters:
            self.sample_limit = 0
            self.dead_letter_limit = len(self.dead_letters)
        elif len(failed.dead_letters) > 1:
            self.dead_letter_limit = len(failed.dead_letters) // 2
        else:
            return False
        return True

    def grow(self) -> None:
        """A commit succeeded: the limits grow back towards their maximum."""
        self.sample_limit = min(self.max_batch, 2 * self.sample_limit + 1)
        self.dead_letter_limit = min(self.max_dead_letters, 2 * self.dead_letter_limit + 1)

    def settle(self, committed: TransactionPlan) -> None:
        """``committed`` is on disk: what it took no longer waits."""
        n = len(committed.samples)
        if n == len(self.samples):
            self.samples.clear()
        else:
            for _ in range(n):
                self.samples.popleft()
        for _ in range(len(committed.dead_letters)):
            self.dead_letters.popleft()
        self._dead_settled += len(committed.dead_letters)
        for name, seq in committed.acks.items():
            if self.acks.get(name) == seq:
                del self.acks[name]
                del self._ack_after[name]
        self.registers = self.registers[len(committed.registers) :]


def _first(items: deque[T], limit: int) -> list[T]:
    if len(items) <= limit:
        return list(items)
    return list(itertools.islice(items, limit))


# -- pure steps of a transaction -------------------------------------------------------


def encode_samples(plan: TransactionPlan, last_seq: int) -> int:
    """Give ``plan``'s samples the seqs after ``last_seq`` and encode them into its rows
    and readings; a sample JSON cannot carry becomes a dead letter instead. Returns the
    last seq given (``last_seq`` if none)."""
    # The per-reading loop of the hot path: names bound locally on purpose.
    seq = last_seq
    add_row = plan.rows.append
    add_reading = plan.readings.append
    encode_one = encode
    stored = StoredReading
    for sample in plan.samples:
        try:
            payload = encode_one(seq + 1, sample)
        except (TypeError, ValueError) as e:
            # JSON cannot carry it (a non-finite ts, an odd value type): keep it as a
            # dead letter rather than lose it. encode() thus also vouches for ts.
            reason = f"unencodable sample: {e}"
            plan.unencodable.append(
                DeadLetter(sample.device, reason, repr(sample).encode(), time.time())
            )
            continue
        seq += 1
        device = sample.device
        add_row((seq, sample.ts, device, payload))
        add_reading(stored(seq, device, payload))
    return seq


def active_floor(cursors: dict[str, int], active: set[str]) -> int | None:
    """The lowest cursor of consumers registered since open (None: no consumer)."""
    return min((cursors[n] for n in active), default=None)


def holding_floor(cursors: dict[str, int], active: set[str], in_grace: bool) -> int | None:
    """The cursor retention must not pass.

    Right after a start, uplinks have not registered yet; until the grace period ends
    (``in_grace``), every persisted cursor holds, so a restart never deletes unsent rows.
    """
    if in_grace:
        return min(cursors.values(), default=None)
    return active_floor(cursors, active)


def room_upto(overflow: Overflow, last_seq: int, holding: int | None) -> int:
    """The highest seq the byte bound may delete to make room."""
    if overflow == "reject_new" and holding is not None:
        # Only readings every consumer has may go; unsent ones are kept.
        return holding
    return last_seq


def meta_changes(
    plan: TransactionPlan, totals: Totals, written: Totals, last_seq: int
) -> list[tuple[str, int]]:
    """The meta rows ``plan``'s transaction writes: the last seq when rows were deleted,
    and each total that differs from what the meta table has (unchanged ones are not
    rewritten). ``last_seq`` is the log's before the transaction. Sets
    ``plan.dropped_total``.

    A start takes the higher of the meta table's ``last_seq`` and the highest stored
    seq, so the row only has to move when deleting may take the newest rows away: an
    append-only commit then does not rewrite the meta page (11-13% fewer bytes written
    per commit at 1 to 18 readings a commit, docs/benchmarks.md).
    """
    meta = []
    if plan.trimmed:
        meta.append((schema.META_LAST_SEQ, max(plan.last_seq, last_seq)))
    plan.dropped_total = totals.dropped + plan.dropped
    if plan.dropped_total != written.dropped:
        meta.append((schema.META_DROPPED, plan.dropped_total))
    dead_total = totals.dead_letters + len(plan.dead_letters) + len(plan.unencodable)
    if dead_total != written.dead_letters:
        meta.append((schema.META_DEAD_LETTERS, dead_total))
    if totals.dead_letters_lost != written.dead_letters_lost:
        meta.append((schema.META_DEAD_LETTERS_LOST, totals.dead_letters_lost))
    if totals.reserved != written.reserved:
        meta.append((schema.META_RESERVED, totals.reserved))
    return meta


def growth_bound(plan: TransactionPlan, page_size: int) -> int:
    """More than the pages in use can have grown by in ``plan``'s transaction (bytes)."""
    rows = sum(len(payload) + len(device) for _, _, device, payload in plan.rows)
    rows += sum(len(d.raw) + len(d.reason) + len(d.device) for d in plan.dead_letters)
    count = len(plan.rows) + len(plan.dead_letters) + len(plan.unencodable)
    rows += sum(len(d.raw) + len(d.reason) for d in plan.unencodable)
    return 2 * (rows + count * ROW_OVERHEAD) + COMMIT_PAGES * page_size
