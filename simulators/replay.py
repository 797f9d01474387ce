"""A capture played back on a pseudo-terminal, with the timing it was recorded with.

Each chunk is written when it is due: its recorded time divided by ``speed`` after the
start (with ``loop``, the capture starts again once its recorded length has passed).
Writes never block the loop; when the reader does not keep up and the pty's buffer is
full, the device waits (as a UART held by RTS/CTS) and the chunks that fell due
meanwhile follow as fast as the reader takes them, until the schedule is met again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from simulators.capture import Capture
from simulators.pty_link import open_raw_pty, point_link, remove_link, writable

# While blocked on a full buffer, how often to look again.
BLOCKED_POLL = 0.05
# A looped capture whose chunks all share one time is still spaced by this much.
MIN_LOOP = 0.001


def schedule(capture: Capture, speed: float, loop: bool) -> Iterator[tuple[float, bytes]]:
    """(seconds after the start, bytes) of every write, in order; endless with ``loop``."""
    if not speed > 0 or not math.isfinite(speed):
        raise ValueError(f"speed must be a positive number, not {speed}")
    period = max(capture.end, MIN_LOOP)
    offset = 0.0
    while True:
        for t, data in capture.chunks:
            yield (offset + t) / speed, data
        if not loop or not capture.chunks:
            return
        offset += period


class ReplayDevice:
    """``async with ReplayDevice(capture, link) as dev: await dev.finished.wait()``.

    ``paused=True`` links the pty and writes nothing until ``resume()``, so a reader can
    open the port first (opening a serial port flushes what was waiting in it).
    """

    def __init__(
        self,
        capture: Capture,
        link: Path | str,
        *,
        speed: float = 1.0,
        loop: bool = False,
        paused: bool = False,
    ) -> None:
        self._schedule = schedule(capture, speed, loop)
        self.capture = capture
        self.link = Path(link)
        self.bytes_written = 0
        self.chunks_written = 0
        self.finished = asyncio.Event()
        self.slave_path: str | None = None
        self._started = asyncio.Event()
        if not paused:
            self._started.set()
        self._fds: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReplayDevice:
        master, slave, self.slave_path = open_raw_pty()
        self._fds = (master, slave)
        try:
            point_link(self.link, self.slave_path)
        except OSError:
            self._close()
            raise
        self._task = asyncio.create_task(self._play(master), name=f"replay:{self.link}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close()

    def resume(self) -> None:
        self._started.set()

    def _close(self) -> None:
        if self._fds is None:
            return
        remove_link(self.link, self.slave_path)
        for fd in self._fds:
            os.close(fd)
        self._fds = None

    async def _play(self, master: int) -> None:
        await self._started.wait()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for due, data in self._schedule:
            delay = start + due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await _write_all(master, data)
            self.bytes_written += len(data)
            self.chunks_written += 1
        self.finished.set()


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await writable(fd, BLOCKED_POLL)
            continue
        view = view[n:]
