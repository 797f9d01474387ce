"""Pseudo-terminal plumbing shared by the simulated devices: a raw pty, a stable link to
its slave, and waiting until its master takes a write."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path


def open_raw_pty() -> tuple[int, int, str]:
    """(master, slave, slave path) of a new pty; the master is non-blocking."""
    master, slave = os.openpty()
    try:
        # Raw: no echo, no line editing, no CR/LF translation between device and reader.
        tty.setraw(slave)
        os.set_blocking(master, False)
        path = os.ttyname(slave)
    except OSError:
        os.close(master)
        os.close(slave)
        raise
    return master, slave, path


def point_link(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target``, replacing any previous one atomically."""
    link.parent.mkdir(parents=True, exist_ok=True)
    # A rename replaces the link atomically: a reader never sees it half made.
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def remove_link(link: Path, target: str | None) -> None:
    """Remove ``link`` if it still points to ``target`` (another device may own it now)."""
    with contextlib.suppress(OSError):
        if os.readlink(link) == target:
            link.unlink()


async def writable(fd: int, at_most: float) -> None:
    """Return when ``fd`` accepts a write, or after ``at_most`` seconds."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def _ready() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, _ready)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await ready
    finally:
        loop.remove_writer(fd)
