"""What went wrong when a port or a chip would not open, or closed: a ``Failure`` kind.

The kind picks the wait before the next open (``gateway.retry.Backoff``).
"""

from __future__ import annotations

import errno

from gateway.retry import Failure

# A port that stayed open this long worked; one that failed sooner is flapping.
STABLE_OPEN = 10.0

_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ENOTDIR})
_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})


def classify_open_error(exc: OSError | ValueError) -> Failure:
    """The failure kind of an exception raised while opening a port."""
    if isinstance(exc, OSError):
        if exc.errno in _MISSING_ERRNOS:
            return Failure.MISSING
        if exc.errno in _DENIED_ERRNOS:
            return Failure.DENIED
    return Failure.TRANSIENT


def classify_loss(open_for: float) -> Failure:
    """The failure kind of a port that failed after being open ``open_for`` seconds.

    A device that drops the connection right after every open would otherwise be
    reopened every ``minimum`` seconds forever; it backs off like a failed open.
    """
    return Failure.LOST if open_for >= STABLE_OPEN else Failure.TRANSIENT


# How each kind reads in a port's last error and log lines.
FAILURE_TEXT = {
    Failure.MISSING: "port missing",
    Failure.DENIED: "permission denied",
    Failure.REJECTED: "rejected",
    Failure.LOST: "connection lost",
    Failure.TRANSIENT: "open failed",
}
