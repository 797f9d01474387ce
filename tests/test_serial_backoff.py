"""Reconnect delays by fault kind, and how open errors are classified."""

from __future__ import annotations

import errno
import random

import serial
from hypothesis import given
from hypothesis import strategies as st

from drivers.open_faults import STABLE_OPEN, classify_loss, classify_open_error
from gateway.retry import Backoff
from gateway.retry import Failure as Fault


def test_classify_open_errors() -> None:
    def fault(code: int) -> Fault:
        return classify_open_error(serial.SerialException(code, "could not open port"))

    assert fault(errno.ENOENT) is Fault.MISSING
    assert fault(errno.ENODEV) is Fault.MISSING
    assert fault(errno.ENXIO) is Fault.MISSING
    assert fault(errno.EACCES) is Fault.DENIED
    assert fault(errno.EPERM) is Fault.DENIED
    assert fault(errno.EBUSY) is Fault.TRANSIENT
    assert (
        classify_open_error(serial.SerialException("Could not configure port")) is Fault.TRANSIENT
    )
    assert classify_open_error(ValueError("Not a valid baudrate")) is Fault.TRANSIENT


def test_missing_port_is_polled_at_a_modest_period() -> None:
    assert Backoff(0.1, 30.0, missing_poll=1.0).delay(Fault.MISSING) == 1.0
    assert Backoff(2.0, 30.0, missing_poll=1.0).delay(Fault.MISSING) == 2.0


def test_permission_denied_waits_long() -> None:
    assert Backoff(0.5, 30.0).delay(Fault.DENIED) == 30.0


def test_failures_grow_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 10.0, rng=random.Random(7))
    delays = [backoff.delay(Fault.TRANSIENT) for _ in range(40)]
    caps = [min(10.0, 2.0**i) for i in range(40)]
    assert all(1.0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert max(delays[5:]) > 5.0  # the jitter reaches well into the capped range


def test_lost_connection_retries_soon_and_restarts_the_series() -> None:
    backoff = Backoff(0.5, 30.0, rng=random.Random(1))
    for _ in range(10):
        backoff.delay(Fault.TRANSIENT)
    assert backoff.delay(Fault.LOST) == 0.5
    assert backoff.delay(Fault.TRANSIENT) == 0.5  # first step of a fresh series: [min, min]


def test_a_short_lived_connection_backs_off_like_a_failed_open() -> None:
    assert classify_loss(STABLE_OPEN) is Fault.LOST
    assert classify_loss(3600.0) is Fault.LOST
    assert classify_loss(0.1) is Fault.TRANSIENT
    backoff = Backoff(0.5, 30.0, rng=random.Random(2))
    # Open, dropped at once, again and again: the waits grow instead of staying at 0.5 s.
    delays = [backoff.delay(classify_loss(0.1)) for _ in range(12)]
    assert max(delays[6:]) > 5.0


@given(
    minimum=st.floats(0.001, 10.0),
    spread=st.floats(1.0, 100.0),
    faults=st.lists(st.sampled_from(list(Fault)), max_size=200),
)
def test_delays_stay_within_bounds(minimum: float, spread: float, faults: list[Fault]) -> None:
    backoff = Backoff(minimum, minimum * spread, missing_poll=1.0, rng=random.Random(0))
    for fault in faults:
        delay = backoff.delay(fault)
        assert minimum <= delay <= max(minimum * spread, 1.0)
