"""The writer's batch planner on its own: what a transaction takes, without SQLite."""

from __future__ import annotations

import json

from gateway.reading import DeadLetter, Sample
from gateway.store import schema
from gateway.store.planner import (
    Overflowed,
    Totals,
    TransactionPlan,
    Waiting,
    active_floor,
    encode_samples,
    growth_bound,
    holding_floor,
    meta_changes,
    room_upto,
)


def _sample(i: int) -> Sample:
    return Sample("thermo-1", "t", float(i), 1_700_000_000.0 + i)


def _letter(i: int) -> DeadLetter:
    return DeadLetter("thermo-1", "not a reading", b"x%d" % i, 1_700_000_000.0 + i)


def _waiting(samples: int = 100, dead_letters: int = 10, batch: int = 50) -> Waiting:
    return Waiting(max_samples=samples, max_dead_letters=dead_letters, max_batch=batch)


def test_a_plan_takes_what_waits_up_to_the_batch_limit() -> None:
    waiting = _waiting(batch=50)
    waiting.add_samples(_sample(i) for i in range(120))
    waiting.add_dead_letter(_letter(0))
    waiting.add_register("mqtt")
    plan = waiting.plan()
    assert plan.samples == [_sample(i) for i in range(50)]
    assert plan.dead_letters == [_letter(0)]
    assert plan.registers == ["mqtt"]


def test_settling_a_plan_keeps_what_came_after_it() -> None:
    waiting = _waiting()
    waiting.add_samples([_sample(1), _sample(2)])
    waiting.add_register("mqtt")
    waiting.add_ack("mqtt", 5)
    plan = waiting.plan()
    waiting.add_samples([_sample(3)])
    waiting.add_ack("mqtt", 7)  # a later ack replaces the planned one
    waiting.settle(plan)
    assert list(waiting.samples) == [_sample(3)]
    assert waiting.registers == []
    assert waiting.acks == {"mqtt": 7}
    assert waiting.plan().acks == {"mqtt": 7}


def test_an_ack_waits_for_the_dead_letters_taken_before_it() -> None:
    waiting = _waiting()
    waiting.add_dead_letter(_letter(0))
    waiting.add_ack("mqtt", 3)
    # Without the dead letter the ack would let the cursor pass the refused reading.
    assert waiting.upkeep().acks == {}
    assert waiting.plan().acks == {"mqtt": 3}
    waiting.dead_letter_limit = 0
    assert waiting.plan().acks == {}


def test_an_ack_before_any_dead_letter_goes_at_once() -> None:
    waiting = _waiting()
    waiting.add_ack("mqtt", 3)
    waiting.add_dead_letter(_letter(0))
    assert waiting.upkeep().acks == {"mqtt": 3}


def test_the_overflow_policy_chooses_which_samples_go() -> None:
    oldest_go = _waiting(samples=3)
    oldest_go.add_samples(_sample(i) for i in range(5))
    assert oldest_go.bound("drop_oldest") == Overflowed(samples=2)
    assert list(oldest_go.samples) == [_sample(2), _sample(3), _sample(4)]

    newest_go = _waiting(samples=3)
    newest_go.add_samples(_sample(i) for i in range(5))
    assert newest_go.bound("reject_new") == Overflowed(samples=2)
    assert list(newest_go.samples) == [_sample(0), _sample(1), _sample(2)]


def test_dead_letters_beyond_the_bound_go_oldest_first_and_settle_their_acks() -> None:
    waiting = _waiting(dead_letters=2)
    for i in range(3):
        waiting.add_dead_letter(_letter(i))
    waiting.add_ack("mqtt", 9)
    assert waiting.bound("drop_oldest") == Overflowed(dead_letters=1)
    assert list(waiting.dead_letters) == [_letter(1), _letter(2)]
    # The lost one counts as settled: the ack waits only for the two still held.
    assert waiting.ready_acks(2) == {"mqtt": 9}
    assert waiting.ready_acks(1) == {}


def test_after_a_full_disk_the_plan_shrinks_samples_first_then_dead_letters() -> None:
    waiting = _waiting(samples=100, dead_letters=10, batch=8)
    waiting.add_samples(_sample(i) for i in range(8))
    for i in range(4):
        waiting.add_dead_letter(_letter(i))
    sizes = []
    plan = waiting.plan()
    while True:
        sizes.append((len(plan.samples), len(plan.dead_letters)))
        if not waiting.shrink(plan):
            break
        plan = waiting.plan()
    assert sizes == [(8, 4), (8, 0), (4, 0), (2, 0), (1, 0), (0, 4), (0, 2), (0, 1)]


def test_limits_grow_back_after_each_commit() -> None:
    waiting = _waiting(dead_letters=10, batch=50)
    waiting.sample_limit = 0
    waiting.dead_letter_limit = 0
    grown = []
    for _ in range(7):
        waiting.grow()
        grown.append((waiting.sample_limit, waiting.dead_letter_limit))
    assert grown == [(1, 1), (3, 3), (7, 7), (15, 10), (31, 10), (50, 10), (50, 10)]


def test_draining_lets_go_of_everything_held() -> None:
    waiting = _waiting()
    waiting.add_samples([_sample(1), _sample(2)])
    waiting.add_dead_letter(_letter(0))
    assert waiting.drain() == Overflowed(samples=2, dead_letters=1)
    assert not waiting.has_data


def test_samples_get_the_seqs_after_the_last_and_unencodable_ones_become_dead_letters() -> None:
    plan = TransactionPlan(
        [_sample(1), Sample("thermo-1", "t", 1.0, float("nan")), _sample(2)], [], {}, []
    )
    last = encode_samples(plan, 41)
    assert last == 43
    assert [r.seq for r in plan.readings] == [42, 43]
    assert [row[0] for row in plan.rows] == [42, 43]
    assert json.loads(plan.readings[1].payload)["value"] == 2.0
    assert len(plan.unencodable) == 1
    assert plan.unencodable[0].reason.startswith("unencodable sample")


def test_no_samples_keep_the_last_seq() -> None:
    assert encode_samples(TransactionPlan([], [], {}, []), 7) == 7


def test_meta_rows_are_written_only_for_totals_that_changed() -> None:
    written = Totals(dropped=5, dead_letters=2, dead_letters_lost=0, reserved=100)
    plan = TransactionPlan([], [_letter(0)], {}, [], last_seq=12)
    meta = meta_changes(plan, written, written, 10)
    assert meta == [(schema.META_DEAD_LETTERS, 3)]
    assert plan.dropped_total == 5

    plan = TransactionPlan([], [], {}, [], dropped=4)
    moved = Totals(dropped=5, dead_letters=2, dead_letters_lost=1, reserved=200)
    assert meta_changes(plan, moved, written, 10) == [
        (schema.META_DROPPED, 9),
        (schema.META_DEAD_LETTERS_LOST, 1),
        (schema.META_RESERVED, 200),
    ]


def test_the_last_seq_is_written_when_rows_are_deleted() -> None:
    # A start takes the higher of the meta row and the highest stored seq: an append
    # leaves the row behind, a deletion (which may take the newest rows) moves it.
    written = Totals(dropped=0, dead_letters=0, dead_letters_lost=0, reserved=100)
    appended = TransactionPlan([], [], {}, [], last_seq=12)
    assert meta_changes(appended, written, written, 10) == []
    trimmed = TransactionPlan([], [], {}, [], last_seq=12, trimmed=True)
    assert meta_changes(trimmed, written, written, 10) == [(schema.META_LAST_SEQ, 12)]
    # Nothing inserted (new samples refused): the log's last seq, not 0.
    refused = TransactionPlan([], [], {}, [], trimmed=True, rejected=True)
    assert meta_changes(refused, written, written, 10) == [(schema.META_LAST_SEQ, 10)]


def test_floors_of_registered_consumers_and_of_retention() -> None:
    cursors = {"mqtt": 10, "old": 3}
    assert active_floor(cursors, set()) is None
    assert active_floor(cursors, {"mqtt"}) == 10
    # Until the grace period ends, a cursor not registered yet still holds retention.
    assert holding_floor(cursors, {"mqtt"}, in_grace=True) == 3
    assert holding_floor(cursors, {"mqtt"}, in_grace=False) == 10


def test_the_byte_bound_keeps_unsent_readings_only_when_new_ones_are_rejected() -> None:
    assert room_upto("reject_new", last_seq=50, holding=10) == 10
    assert room_upto("reject_new", last_seq=50, holding=None) == 50
    assert room_upto("drop_oldest", last_seq=50, holding=10) == 50


def test_the_growth_bound_counts_every_row_written() -> None:
    plan = TransactionPlan([], [_letter(0)], {}, [], rows=[(1, 0.0, "d", b"p" * 100)])
    empty = growth_bound(TransactionPlan([], [], {}, []), 4096)
    assert growth_bound(plan, 4096) > empty + 2 * 100
