"""One gateway per data directory: an exclusive lock held while the store is open.

Two writers on one log would both hand out the same seqs. The lock also tells
the ``queue`` commands whether the gateway is running. The kernel releases it
when the process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from gateway.errors import StoreError

LOCK_NAME = "readings.lock"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, retrying for up to ``wait`` seconds (a ``queue`` command
        checking whether the gateway runs holds it for an instant)."""
        deadline = time.monotonic() + wait
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                raise StoreError(
                    f"{self.path.parent} is in use by another gateway process"
                ) from None
            self._fd = fd
            return

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def held_by_other(data_dir: Path) -> bool:
    """True while a running gateway has the data directory open."""
    lock = DataDirLock(data_dir)
    if not lock.path.exists():
        return False
    try:
        lock.acquire()
    except StoreError:
        return True
    lock.release()
    return False
