"""LiveTail: the commit listener's readings, and when they may stand in for a read of the log."""

from __future__ import annotations

from gateway.reading import StoredReading
from gateway.uplinks.tail import LiveTail


def readings(first: int, last: int) -> list[StoredReading]:
    return [StoredReading(seq, "d", b"{}") for seq in range(first, last + 1)]


def test_covers_a_reader_at_or_past_its_start_once_something_newer_is_there() -> None:
    tail = LiveTail(after=10, limit=100)
    assert not tail.covers(10)  # nothing announced yet
    tail.on_commit(readings(11, 13))
    assert tail.covers(10)
    assert tail.covers(12)
    assert not tail.covers(13)  # nothing newer than the reader
    assert not tail.covers(9)  # seq 10 was committed before the tail began: read the log


def test_take_skips_what_the_reader_has_and_moves_the_start() -> None:
    tail = LiveTail(after=0, limit=100)
    tail.on_commit(readings(1, 5))
    tail.on_commit(readings(6, 8))
    assert [r.seq for r in tail.take(2, 4)] == [3, 4, 5, 6]
    assert tail.after == 6
    assert not tail.covers(5)  # a reader sent back behind the tail reads the log
    assert [r.seq for r in tail.take(6, 10)] == [7, 8]
    assert not tail.covers(8)


def test_overflow_forgets_and_restarts_after_the_newest_seq() -> None:
    tail = LiveTail(after=0, limit=4)
    tail.on_commit(readings(1, 3))
    tail.on_commit(readings(4, 6))  # would hold 6 > 4: forgotten
    assert tail.after == 6
    assert not tail.covers(3)  # the reader must read 4..6 from the log
    tail.on_commit(readings(7, 8))
    assert tail.covers(6)
    assert [r.seq for r in tail.take(6, 10)] == [7, 8]
