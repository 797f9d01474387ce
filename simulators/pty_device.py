"""A simulated serial device on a pseudo-terminal, linked at a stable path like a udev symlink.

The device side holds the pty master; the gateway opens the slave through the link,
exactly as it opens ``/dev/serial/by-id/...`` for a USB adapter. Lines are produced on
a schedule (``rate`` per second, several per write at high rates) and written with
non-blocking writes on the event loop, so a device nobody reads never blocks the loop.

Flow control: when the pty's buffer is full (no reader, or a slow one) the device
waits, like a UART held by RTS/CTS, and does not catch up with a burst afterwards; no
line is dropped while the device is plugged in.

Unplugging closes the master (the reader gets an I/O error, as when a USB adapter is
pulled), removes the link, and replugging makes a new pty and points the link at it.
Lines are never cut: a write in progress is completed first, then the device waits
(up to ``UNPLUG_GRACE``) for the reader to take what is buffered. Lines due while
unplugged are counted in ``lines_lost`` and the counter keeps counting, so a reader
sees a gap, as with real hardware. When nobody reads (nothing taken for ``STALL``
seconds) the device does not wait: the buffered bytes and a write that could not
complete are dropped with the pty, and no reader saw any of them.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import math
import os
import random
import termios
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Literal

from simulators.pty_link import open_raw_pty, point_link, remove_link, writable
from simulators.sources import bad_line, make_source

log = logging.getLogger(__name__)

# What a write carries: data lines (counted), a garbage line, or injected raw bytes.
_Payload = Literal["lines", "garbage", "raw"]

UNPLUG_GRACE = 1.0
# Lines are written in batches at least this far apart; at 100k lines/s that is
# 500 lines per write instead of one system call per line.
TICK = 0.005
# While blocked on a full buffer, how often to look for an unplug request.
BLOCKED_POLL = 0.05
# A reader that took nothing for this long is not reading (see unplug).
STALL = 0.2


class PtyDevice:
    """``async with PtyDevice("counter", link, rate=1000) as dev:`` runs one device."""

    def __init__(
        self,
        kind: str,
        link: Path | str,
        *,
        rate: float = 10.0,
        count: int | None = None,
        garbage_every: int = 0,
        unplug_every: float = 0.0,
        unplug_for: float = 1.0,
        start: int = 1,
        paused: bool = False,
        seed: int | None = None,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number of lines per second, not {rate}")
        if count is not None and count < 0:
            raise ValueError("count must not be negative")
        if garbage_every < 0 or unplug_every < 0 or unplug_for < 0:
            raise ValueError("garbage_every, unplug_every and unplug_for must not be negative")
        # Simulated noise, not secrets.
        self._rng = random.Random(seed)  # noqa: S311
        self._source = make_source(kind, self._rng, start)
        self.kind = kind
        self.link = Path(link)
        self.rate = rate
        self.count = count
        self.garbage_every = garbage_every
        self.unplug_every = unplug_every
        self.unplug_for = unplug_for
        self.lines_written = 0  # data lines fully handed to the pty
        self.garbage_written = 0
        self.lines_lost = 0  # data lines due while unplugged
        self.lines_generated = 0
        self.unplugs = 0
        self.slave_path: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._paused = paused
        self._wake = asyncio.Event()
        self._injections: deque[bytes] = deque()
        self._port_lock = asyncio.Lock()
        self._unplugging = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def finished(self) -> bool:
        """All ``count`` lines are generated (written, or lost while unplugged)."""
        return self.count is not None and self.lines_generated >= self.count

    async def __aenter__(self) -> PtyDevice:
        self._plug()
        self._tasks.append(asyncio.create_task(self._transmit(), name=f"sim:{self.link}"))
        if self.unplug_every:
            self._tasks.append(
                asyncio.create_task(self._unplug_schedule(), name=f"sim-unplug:{self.link}")
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._close_pty()

    def pause(self) -> None:
        """Stop producing lines (injected bytes are still written)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    def inject(self, data: bytes) -> None:
        """Write raw bytes between two lines (the next write), for hostile-input tests."""
        self._injections.append(data)
        self._wake.set()

    async def unplug(self) -> None:
        """Pull the adapter: close the pty and remove the link (see the module docstring)."""
        if self._master is None:
            return
        self._unplugging = True
        try:
            async with self._port_lock:
                await self._wait_drained()
                self._close_pty()
        finally:
            self._unplugging = False
        self.unplugs += 1
        log.info("%s unplugged", self.link)

    def replug(self) -> None:
        """Plug the adapter back in: a new pty, the link pointing to it."""
        if self._master is None:
            self._plug()
            log.info("%s plugged in again on %s", self.link, self.slave_path)

    def _plug(self) -> None:
        master, slave, slave_path = open_raw_pty()
        try:
            point_link(self.link, slave_path)
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave = master, slave
        self.slave_path = slave_path

    def _close_pty(self) -> None:
        if self._master is None or self._slave is None:
            return
        remove_link(self.link, self.slave_path)
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = None

    async def _wait_drained(self) -> None:
        """Wait until the reader has taken every byte written.

        Written bytes reach the slave's input queue a moment after write() returns,
        so the queue must read empty twice in a row. A queue that does not shrink for
        ``STALL`` seconds has no reader; waiting longer would only delay the unplug.
        """
        assert self._slave is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNPLUG_GRACE
        last_change = loop.time()
        empty_in_a_row = 0
        previous = -1
        pending = array.array("i", [0])
        while empty_in_a_row < 2:
            now = loop.time()
            if now > deadline or now - last_change > STALL:
                return
            fcntl.ioctl(self._slave, termios.FIONREAD, pending)
            if pending[0] != previous:
                previous, last_change = pending[0], now
            empty_in_a_row = empty_in_a_row + 1 if pending[0] == 0 else 0
            await asyncio.sleep(TICK)

    async def _unplug_schedule(self) -> None:
        while True:
            await asyncio.sleep(self.unplug_every)
            await self.unplug()
            await asyncio.sleep(self.unplug_for)
            self.replug()

    async def _transmit(self) -> None:
        loop = asyncio.get_running_loop()
        batch = max(1, math.ceil(self.rate * TICK * 2))
        base_time = loop.time()
        base_lines = 0  # lines generated since base_time
        while True:
            if self._injections and self._master is not None:
                async with self._port_lock:
                    if self._master is not None:  # not unplugged while waiting for the lock
                        await self._send(self._injections.popleft(), "raw")
                continue
            if self._paused or self.finished:
                await self._wait_wake(None)
                base_time, base_lines = loop.time(), 0
                continue
            due = math.floor((loop.time() - base_time) * self.rate) - base_lines
            if due <= 0:
                next_at = base_time + (base_lines + 1) / self.rate
                await self._wait_wake(max(next_at - loop.time(), TICK))
                continue
            if due > 4 * batch:
                # Behind (held by a full buffer): go on from now rather than burst.
                base_time, base_lines, due = loop.time(), 0, batch
            n = min(due, batch)
            if self.count is not None:
                n = min(n, self.count - self.lines_generated)
            base_lines += n
            await self._emit(n)

    async def _emit(self, n: int) -> None:
        """Generate ``n`` data lines, and garbage lines between them if asked, and write them."""
        segments: list[tuple[bytes, _Payload]] = []
        lines: list[bytes] = []
        for _ in range(n):
            lines.append(self._source.line())
            self.lines_generated += 1
            if self.garbage_every and self.lines_generated % self.garbage_every == 0:
                segments += [
                    (b"".join(lines), "lines"),
                    (bad_line(self._source, self._rng), "garbage"),
                ]
                lines = []
        if lines:
            segments.append((b"".join(lines), "lines"))
        async with self._port_lock:
            if self._master is None:
                self.lines_lost += n
                return
            for data, payload in segments:
                if not await self._send(data, payload):
                    break

    async def _send(self, data: bytes, payload: _Payload) -> bool:
        """Write all of ``data`` without blocking the loop; False if abandoned for an unplug
        that nobody is reading (see the module docstring)."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        sent = 0
        blocked_since: float | None = None
        while sent < len(data):
            assert self._master is not None
            try:
                n = os.write(self._master, view[sent:])
            except BlockingIOError:
                now = loop.time()
                blocked_since = blocked_since if blocked_since is not None else now
                if self._unplugging and now - blocked_since > STALL:
                    return False
                await writable(self._master, BLOCKED_POLL)
                continue
            blocked_since = None
            if payload == "lines":
                self.lines_written += data.count(b"\n", sent, sent + n)
            sent += n
        if payload == "garbage":
            self.garbage_written += 1
        return True

    async def _wait_wake(self, at_most: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._wake.wait()
        self._wake.clear()
