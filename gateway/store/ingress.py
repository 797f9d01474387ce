"""What the event loop hands the writer thread: an ordered, bounded, lock-free queue.

``put`` runs on the event loop and never blocks; the writer thread takes
everything waiting in one go. The wake-up event is cleared *before* the queue is
drained, so an item appended during a drain is never missed.

Everything that enters is bounded: samples and dead letters by count (a dead letter's
raw bytes by size too), requests by how many wait. What is refused is counted.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.reading import DeadLetter, Sample


@dataclass(slots=True)
class Request:
    """A control request resolved on the event loop once the writer has done it."""

    future: asyncio.Future[int]


@dataclass(slots=True)
class CursorRequest(Request):
    name: str


@dataclass(slots=True)
class Register(CursorRequest):
    # A cursor that does not exist yet starts at the last seq (readings committed from
    # now on) rather than before the oldest one.
    start_now: bool = False
    # Else a cursor that does not exist yet starts here (at most the last seq).
    start_at: int = 0
    # Retention does not wait for this consumer (see docs/store.md, consumers).
    best_effort: bool = False


@dataclass(slots=True)
class Release(CursorRequest):
    """The consumer is gone for good: its cursor is deleted and holds nothing more."""


@dataclass(slots=True)
class Ack(CursorRequest):
    seq: int


@dataclass(slots=True)
class Flush(Request):
    # Samples the writer had taken when it saw this request; set by the writer.
    target: int = field(default=0)


@dataclass(slots=True)
class Stop(Request):
    pass


@dataclass(slots=True)
class Damaged:
    """A reader found the database damaged; ``generation`` says which database it read,
    so a report about a file already moved aside does not move its successor aside."""

    generation: int
    reason: str


Item = Sequence[Sample] | DeadLetter | Request | Damaged

# Samples put and not yet committed from which the store reports itself congested,
# so that drivers stop reading until the writer has worked the backlog down to half
# of it. Well below the writer's own bound on held samples (100,000), so backpressure
# acts before any bound drops, with a few MB of samples in memory at most; large
# enough that commits under overload stay big and the fsync per commit is noise.
HIGH_WATER = 20_000
# A dead letter weighs this many samples in the congestion marks (a row with its raw
# bytes, its reason and its own index entry): a device sending only bad lines is held
# back by 500 of them waiting, as one sending good ones is by 20,000 samples.
DEAD_LETTER_WEIGHT = 40
# Dead letters put and not yet taken by the writer; beyond, they are counted and lost.
MAX_PENDING_DEAD_LETTERS = 1_000
# The raw bytes kept of one dead letter (codecs bound their lines far below this).
MAX_DEAD_LETTER_RAW = 64 * 1024
# Requests (flushes, registrations, acks) put and not yet answered.
MAX_PENDING_REQUESTS = 1_000


class Congestion:
    """High- and low-water marks over the samples put and not yet settled.

    Hysteresis keeps a driver from pausing and resuming at every commit: congested
    from ``high_water`` pending until ``low_water`` (half of it) or fewer remain.
    """

    def __init__(self, high_water: int = HIGH_WATER) -> None:
        if high_water < 2:
            raise ValueError(f"high_water must be at least 2, not {high_water}")
        self.high_water = high_water
        self.low_water = high_water // 2
        self.active = False
        self.episodes = 0  # times the marks were crossed upwards

    def update(self, pending: int) -> bool:
        """Whether ``pending`` samples mean congestion, given the state so far."""
        if self.active:
            self.active = pending > self.low_water
        elif pending >= self.high_water:
            self.active = True
            self.episodes += 1
        return self.active


class Ingress:
    """A deque between one producer thread (the loop) and the writer thread.

    The bounds count samples and dead letters put and not yet taken; they only bite
    when the writer is stuck inside a call (a hung disk) and a producer ignores
    congestion, since the writer drains the queue every turn. Requests are bounded
    where they are answered (``Store._request``).
    Two counters each written by one thread keep each count free of locks.
    """

    def __init__(self, max_pending: int) -> None:
        self._items: deque[Item] = deque()
        self._wake = threading.Event()
        self.max_pending = max_pending
        # Set by the writer when its thread ends: nothing more is taken, so nothing
        # more is accepted (refused and counted instead of queued for nobody).
        self.closed = False
        self.submitted = 0  # written by the producer only
        self.rejected = 0  # written by the producer only
        self.taken = 0  # written by the writer only
        self.dead_submitted = 0  # written by the producer only
        self.dead_rejected = 0  # written by the producer only
        self.dead_taken = 0  # written by the writer only

    def put_samples(self, samples: Sequence[Sample]) -> bool:
        """Queue samples; False (and counted) when the writer is too far behind."""
        n = len(samples)
        if self.closed or self.submitted - self.taken >= self.max_pending:
            self.rejected += n
            return False
        self.submitted += n
        # A copy: the caller may reuse its list once this returns.
        self._items.append(tuple(samples))
        self._poke()
        return True

    def put_dead_letter(self, dead_letter: DeadLetter) -> bool:
        """Queue a dead letter; False (and counted) when too many wait or none are taken."""
        if self.closed or self.dead_submitted - self.dead_taken >= MAX_PENDING_DEAD_LETTERS:
            self.dead_rejected += 1
            return False
        raw = dead_letter.raw
        if len(raw) > MAX_DEAD_LETTER_RAW:
            reason = f"{dead_letter.reason} (raw bytes cut from {len(raw)})"
            dead_letter = DeadLetter(
                dead_letter.device, reason, raw[:MAX_DEAD_LETTER_RAW], dead_letter.ts
            )
        self.dead_submitted += 1
        self._items.append(dead_letter)
        self._poke()
        return True

    def put(self, item: Request | Damaged) -> None:
        self._items.append(item)
        self._poke()

    def _poke(self) -> None:
        # Skipping set() when already set is safe: the writer clears before it drains.
        if not self._wake.is_set():
            self._wake.set()

    def take(self, timeout: float | None) -> list[Item]:
        """Wait up to ``timeout`` for something, then take everything waiting."""
        self._wake.wait(timeout)
        self._wake.clear()
        pop = self._items.popleft
        return [pop() for _ in range(len(self._items))]
