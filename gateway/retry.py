"""The backoff every reconnecting part shares: by kind of failure, capped exponential, jittered.

Each part (a serial port, a GPIO chip, the MQTT broker) says what went wrong; how long
to wait for each kind of failure is the same everywhere. Full jitter spreads a fleet of
gateways that lost the same thing at the same moment.
"""

from __future__ import annotations

import enum
import random

# Beyond this many doublings any practical cap has been reached; it keeps 2**attempt finite.
_MAX_DOUBLINGS = 32


class Failure(enum.Enum):
    """Why something is not working; each kind has its own retry policy."""

    # Absent (an unplugged adapter, a symlink gone): polled until it is back.
    MISSING = "missing"
    # Refused by this machine (permission denied): fixed by an operator, not by retrying
    # fast, so it waits the cap.
    DENIED = "denied"
    # Refused by a peer (bad credentials, not authorized, an untrusted certificate): it
    # will not heal by itself and quick retries may get the client banned, so it waits
    # near the cap, jittered so that a fleet does not come back at once.
    REJECTED = "rejected"
    # It worked for a while, then failed: usually back soon, so the series starts afresh.
    LOST = "lost"
    # Anything else (refused, reset, timed out, busy, refused settings): usually brief,
    # so the delay starts small and doubles up to the cap.
    TRANSIENT = "transient"


def exponential_jitter(attempt: int, minimum: float, maximum: float, rng: random.Random) -> float:
    """Delay before try ``attempt + 1``: uniform between ``minimum`` and
    ``minimum * 2**attempt``, capped at ``maximum``."""
    ceiling = min(maximum, minimum * 2.0 ** min(attempt, _MAX_DOUBLINGS))
    return rng.uniform(minimum, ceiling)


def retry_delay(
    failure: Failure,
    attempt: int,
    minimum: float,
    maximum: float,
    rng: random.Random,
    *,
    missing_poll: float = 1.0,
) -> float:
    """Delay before try number ``attempt + 1`` (``attempt`` counts from 0) after ``failure``.

    ``missing_poll`` is how often something missing is tried again: often enough to
    notice a replugged adapter within a second or so, never faster than ``minimum``.
    """
    if failure is Failure.MISSING:
        return max(minimum, missing_poll)
    if failure is Failure.DENIED:
        return maximum
    if failure is Failure.REJECTED:
        return rng.uniform(max(minimum, maximum / 2), maximum)
    if failure is Failure.LOST:
        return minimum
    return exponential_jitter(attempt, minimum, maximum, rng)


class Backoff:
    """Consecutive failures of one thing (a port, a connection); reset on success."""

    def __init__(
        self,
        minimum: float,
        maximum: float,
        *,
        missing_poll: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self.missing_poll = missing_poll
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def delay(self, failure: Failure) -> float:
        """Seconds to wait after ``failure`` before the next try."""
        if failure is Failure.LOST:
            self.attempt = 0
        delay = retry_delay(
            failure,
            self.attempt,
            self.minimum,
            self.maximum,
            self._rng,
            missing_poll=self.missing_poll,
        )
        # A peer that rejects and then drops us keeps climbing the series; fixed waits
        # (missing, denied) leave it where it is.
        if failure in (Failure.TRANSIENT, Failure.REJECTED):
            self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
