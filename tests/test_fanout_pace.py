"""The live stream's fan-out pace: commit spacing from the measured cost of a sweep."""

from __future__ import annotations

import pytest

from gateway.local.fanout_pace import INITIAL_COST, OUTLIER, SHARE, SMOOTHING, FanoutPace


def settled(seconds_per_sweep: float, clients: int, sweeps: int = 500) -> FanoutPace:
    pace = FanoutPace()
    for _ in range(sweeps):
        pace.timed(seconds_per_sweep, clients)
    return pace


def spacing(pace: FanoutPace, clients: int) -> float:
    value = pace.spacing(clients)
    assert value is not None
    return value


def test_nobody_watching_means_no_spacing() -> None:
    assert FanoutPace().spacing(0) is None


def test_before_any_sweep_the_spacing_assumes_a_slow_gateway() -> None:
    pace = FanoutPace()
    assert spacing(pace, 1) == pytest.approx(INITIAL_COST / SHARE)
    assert spacing(pace, 100) == pytest.approx(100 * INITIAL_COST / SHARE)


def test_sweeps_take_their_share_of_the_loop_once_measured() -> None:
    # 100 clients swept in 1 ms: commits 4 ms apart keep sweeps at a quarter of the loop.
    pace = settled(0.001, 100)
    assert pace.cost_per_client == pytest.approx(10e-6)
    assert 0.001 / spacing(pace, 100) == pytest.approx(SHARE)
    # More clients on the same machine: proportionally further apart.
    assert spacing(pace, 200) == pytest.approx(2 * spacing(pace, 100))


def test_a_slower_machine_gets_fewer_larger_frames() -> None:
    fast, slow = settled(0.001, 100), settled(0.004, 100)
    assert spacing(slow, 100) == pytest.approx(4 * spacing(fast, 100))


def test_one_stretched_sweep_moves_the_spacing_only_a_little() -> None:
    pace = settled(0.001, 100)
    before = spacing(pace, 100)
    pace.timed(0.5, 100)  # the loop paused half a second in the middle of a sweep
    assert spacing(pace, 100) == pytest.approx(before * (1 + (OUTLIER - 1) * SMOOTHING))


def test_a_sweep_with_no_clients_teaches_nothing() -> None:
    pace = FanoutPace()
    pace.timed(0.01, 0)
    assert pace.cost_per_client == INITIAL_COST
