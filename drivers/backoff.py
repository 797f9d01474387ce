"""How long a transport waits before opening its port again, chosen by what went wrong."""

from __future__ import annotations

import enum
import errno
import random
from dataclasses import dataclass, field

from gateway.retry import exponential_jitter


class Fault(enum.Enum):
    """Why the port is not open; each kind has its own retry policy."""

    MISSING = "port missing"  # unplugged adapter, symlink gone: poll until it is back
    DENIED = "permission denied"  # fixed by an operator, not by retrying fast
    LOST = "connection lost"  # it worked for a while, then failed: usually back soon
    FAILED = "open failed"  # busy, refused settings, unknown: exponential backoff


# A port that stayed open this long worked; one that failed sooner is flapping.
STABLE_OPEN = 10.0

_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ENOTDIR})
_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})


def classify_open_error(exc: OSError | ValueError) -> Fault:
    """The fault kind of an exception raised while opening a port."""
    if isinstance(exc, OSError):
        if exc.errno in _MISSING_ERRNOS:
            return Fault.MISSING
        if exc.errno in _DENIED_ERRNOS:
            return Fault.DENIED
    return Fault.FAILED


def classify_loss(open_for: float) -> Fault:
    """The fault kind of a port that failed after being open ``open_for`` seconds.

    A device that drops the connection right after every open would otherwise be
    reopened every ``minimum`` seconds forever; it backs off like a failed open.
    """
    return Fault.LOST if open_for >= STABLE_OPEN else Fault.FAILED


@dataclass(slots=True)
class Backoff:
    """The shared exponential backoff for failed opens; fixed delays for the other faults.

    ``missing_poll`` is how often a missing port's path is tried again: often enough to
    notice a replugged adapter within a second or so, never faster than ``minimum``.
    """

    minimum: float
    maximum: float
    missing_poll: float = 1.0
    # Jitter need not be secret.
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def delay(self, fault: Fault) -> float:
        """Seconds to wait after ``fault`` before the next open."""
        if fault is Fault.MISSING:
            return max(self.minimum, self.missing_poll)
        if fault is Fault.DENIED:
            return self.maximum
        if fault is Fault.LOST:
            # It worked for a while: retry soon, and start the exponential series afresh.
            self.attempt = 0
            return self.minimum
        delay = exponential_jitter(self.attempt, self.minimum, self.maximum, self.rng)
        self.attempt += 1
        return delay
