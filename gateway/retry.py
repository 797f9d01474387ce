"""The backoff every reconnecting part shares: capped exponential, with full jitter.

Each part (a serial port, a GPIO chip, the MQTT broker) decides by what went wrong
whether to use it; the series itself is the same everywhere. Full jitter spreads a
fleet of gateways that lost the same thing at the same moment.
"""

from __future__ import annotations

import random

# Beyond this many doublings any practical cap has been reached; it keeps 2**attempt finite.
_MAX_DOUBLINGS = 32


def exponential_jitter(attempt: int, minimum: float, maximum: float, rng: random.Random) -> float:
    """Delay before try ``attempt + 1``: uniform between ``minimum`` and
    ``minimum * 2**attempt``, capped at ``maximum``."""
    ceiling = min(maximum, minimum * 2.0 ** min(attempt, _MAX_DOUBLINGS))
    return rng.uniform(minimum, ceiling)
