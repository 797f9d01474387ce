"""The ``gpio_input`` core: debounced state and pulse count of one digital input.

Pure code, no I/O and no clock: the transport feeds raw edges with the times it saw
them and asks for what they settled into. A change counts once the input has held its
new level for ``bounce`` seconds (a glitch filter, like the kernel's debounce): contact
bounce and spikes shorter than that never become readings or pulses, and the state
after a burst of bounces is always the level the input came to rest at.

Memory is bounded whatever the input does: the pulse count is one integer, and at most
``keep_changes`` accepted changes wait for ``take``; past that, changes are counted as
missed and only the latest is kept, so the reported state still ends right.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Change:
    """The input settled at ``active``; ``ts`` is when it left its previous level."""

    ts: float
    active: bool


@dataclass(frozen=True, slots=True)
class Taken:
    """What settled since the last ``take``."""

    changes: tuple[Change, ...]
    # Changes that settled but are not in ``changes`` (the queue was full).
    missed: int


class InputTracker:
    """One input's debounced state, fed with raw edges from any number of calls.

    Times are two clocks: ``mono`` (monotonic seconds, for the filter) and ``ts`` (the
    wall-clock time a reading carries). The caller serialises calls.
    """

    def __init__(self, bounce: float, keep_changes: int) -> None:
        if bounce < 0:
            raise ValueError("bounce must not be negative")
        if keep_changes < 0:
            raise ValueError("keep_changes must not be negative")
        self.bounce = bounce
        self.keep_changes = keep_changes
        self.state = False
        # Activations that settled (pulses), since the tracker was made.
        self.count = 0
        self._raw = False
        self._raw_since = 0.0
        self._raw_ts = 0.0
        self._changes: deque[Change] = deque()
        self._latest: Change | None = None
        self._overflowed = 0

    def start(self, active: bool, mono: float, ts: float) -> None:
        """The level read when the pin opened: taken as settled, not as a change."""
        self.state = self._raw = active
        self._raw_since, self._raw_ts = mono, ts

    def edge(self, active: bool, mono: float, ts: float) -> None:
        """The input read ``active`` at ``mono``; a repeat of the same level is no edge."""
        if active == self._raw:
            return
        self.settle(mono)
        self._raw, self._raw_since, self._raw_ts = active, mono, ts
        if self.bounce == 0:
            self._accept(Change(ts, active))

    def settle(self, mono: float) -> None:
        """Accept the current level if it has held for ``bounce`` seconds by ``mono``."""
        if self._raw != self.state and mono - self._raw_since >= self.bounce:
            self._accept(Change(self._raw_ts, self._raw))

    @property
    def settle_due(self) -> float | None:
        """When the level now pending will have held long enough, or None if none is."""
        return self._raw_since + self.bounce if self._raw != self.state else None

    def take(self) -> Taken:
        """The changes that settled since the last call, oldest first."""
        changes = list(self._changes)
        missed = self._overflowed
        latest = self._latest
        if latest is not None and (not changes or changes[-1].active != latest.active):
            changes.append(latest)
            missed -= 1
        self._changes.clear()
        self._latest = None
        self._overflowed = 0
        return Taken(tuple(changes), missed)

    def _accept(self, change: Change) -> None:
        self.state = change.active
        if change.active:
            self.count += 1
        if len(self._changes) < self.keep_changes:
            self._changes.append(change)
        elif self.keep_changes:
            self._overflowed += 1
            self._latest = change


@dataclass(slots=True)
class RateMeter:
    """Pulses per second between two reports, from the running count."""

    count: int
    since: float  # monotonic time of the previous report (or of the start)

    def report(self, count: int, mono: float) -> float:
        """The rate since the previous report; starts the next period at ``mono``."""
        elapsed = mono - self.since
        rate = (count - self.count) / elapsed if elapsed > 0 else 0.0
        self.count, self.since = count, mono
        return rate
