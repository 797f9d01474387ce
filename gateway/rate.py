"""A token bucket: at most ``rate`` events per second, with a small burst.

The MQTT uplink waits for a token (a message rate cap); the local stream refuses an
inbound message when none is left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        # A tenth of a second's worth: smooth enough for per-second broker quotas.
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self) -> float:
        """Seconds until one token is available (0 when one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self) -> None:
        self._refill()
        self._tokens -= 1

    def try_take(self) -> bool:
        """Take a token if one is available; False (and nothing taken) otherwise."""
        self._refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def acquire(self) -> None:
        # Taking after the wait may leave the bucket slightly below zero; the
        # next wait then accounts for that debt.
        delay = self.wait_time()
        if delay > 0:
            await asyncio.sleep(delay)
        self.take()
