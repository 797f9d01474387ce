"""How long to wait before trying again: by kind of failure, exponential, jittered.

A network failure (refused, reset, timed out, unreachable) is usually brief, so
the delay starts small and doubles up to the cap. A rejection (bad credentials,
not authorized, an untrusted certificate) will not heal by itself: trying again
quickly only fills logs and may get the client banned, so it waits near the cap.
"""

from __future__ import annotations

import enum
import random

from gateway.retry import exponential_jitter


class FailureKind(enum.Enum):
    NETWORK = "network"
    REJECTED = "rejected"


def retry_delay(
    kind: FailureKind, attempt: int, minimum: float, maximum: float, rng: random.Random
) -> float:
    """Delay before try number ``attempt + 1`` (``attempt`` counts from 0)."""
    if kind is FailureKind.REJECTED:
        return rng.uniform(maximum / 2, maximum)
    return exponential_jitter(attempt, minimum, maximum, rng)


class Backoff:
    """Consecutive failures of one thing (a connection); reset on success."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self.attempts = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next_delay(self, kind: FailureKind) -> float:
        delay = retry_delay(kind, self.attempts, self.minimum, self.maximum, self._rng)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
