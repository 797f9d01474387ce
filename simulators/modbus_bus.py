"""A simulated Modbus RTU bus on a pseudo-terminal: several slaves behind one port.

pymodbus's serial server opens a port by name, and the gateway needs a name too, so
the bus is two pseudo-terminals joined back to back: the gateway opens the one linked
at ``link``, the server the other, and the bytes are copied between their masters by
``Wire``.

A pseudo-terminal moves bytes at once; a bus does not. ``Wire`` hands each byte on
when it would have crossed a real line at ``baudrate`` (11 bits a character: 8 data
bits with parity or a second stop bit, Modbus's framing), one direction at a time, and
starts a slave's answer no sooner than ``turnaround`` after the request's last byte, as
a slave's firmware does. So polls per second and the silent interval between frames
are what they would be on RS-485. Like a USB adapter, it hands bytes on in chunks (at
most ``HANDOVER`` after the oldest crossed), the last byte of a frame on time.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import select
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import fields
from pathlib import Path
from types import TracebackType

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer

from drivers.modbus_rtu.codec import char_time, silent_interval
from drivers.modbus_rtu.device import METER_REGISTERS, SimulatedMeter
from simulators.pty_link import open_raw_pty, point_link, remove_link

# From the last byte of a request to the first of the answer, at the least: a slave's
# firmware answers within a few milliseconds, and never before the silent interval.
DEFAULT_TURNAROUND = 0.002
# The longest a byte that has crossed waits to be handed on with the ones after it.
HANDOVER = 0.001


class ModbusBus:
    """``async with ModbusBus(link, [1, 2, 3]) as bus: bus.meters[2].silent = True``.

    Faults on demand: a meter's ``silent`` or ``exception`` (see ``SimulatedMeter``), and
    the bus's ``corrupt``: every answer reaches the gateway with its CRC broken.
    """

    def __init__(
        self,
        link: Path | str,
        slave_ids: Iterable[int],
        *,
        baudrate: int = 9600,
        turnaround: float = DEFAULT_TURNAROUND,
        seed: int | None = None,
    ) -> None:
        # Simulated noise, not secrets.
        rng = random.Random(seed)  # noqa: S311
        self.link = Path(link)
        self.baudrate = baudrate
        self.meters = {i: SimulatedMeter(i, rng) for i in slave_ids}
        if not self.meters:
            raise ValueError("a bus needs at least one slave id")
        self.corrupt = False
        self.turnaround = max(turnaround, silent_interval(baudrate))
        self._fds: list[int] = []
        self._server: ModbusSerialServer | None = None
        self._wire: Wire | None = None

    async def __aenter__(self) -> ModbusBus:
        outer_master, outer_slave, outer_path = open_raw_pty()
        inner_master, inner_slave, inner_path = open_raw_pty()
        self._fds = [outer_master, outer_slave, inner_master, inner_slave]
        self._wire = Wire(outer_master, inner_master, self)
        self._wire.start()
        self._server = ModbusSerialServer(
            [meter.device() for meter in self.meters.values()],
            framer=FramerType.RTU,
            port=inner_path,
            baudrate=self.baudrate,
            ignore_missing_devices=True,
        )
        await self._server.serve_forever(background=True)
        point_link(self.link, outer_path)
        self.slave_path = outer_path
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        remove_link(self.link, self.slave_path)
        if self._wire is not None:
            self._wire.stop()
            self._wire = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def meter_register_keys(sensors: Collection[str]) -> list[dict[str, object]]:
    """The simulated meter's registers named in ``sensors`` as the
    ``[[devices.registers]]`` keys of a device that reads them (defaults left out)."""
    return [
        {f.name: getattr(r, f.name) for f in fields(r) if getattr(r, f.name) != f.default}
        for r in METER_REGISTERS
        if r.sensor in sensors
    ]


class Wire(threading.Thread):
    """The RS-485 pair between the gateway's pty and the server's, at the bus's pace.

    A thread rather than the event loop: handing bytes on at 115,200 baud needs waits
    of a tenth of a millisecond, finer than the loop's timers, and the server's answers
    must not wait behind the loop's other work.
    """

    def __init__(self, gateway: int, server: int, bus: ModbusBus) -> None:
        super().__init__(name=f"modbus-wire:{bus.link}", daemon=True)
        self._gateway = gateway
        self._server = server
        self._bus = bus
        self._char = char_time(bus.baudrate)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        # Bytes on their way: (when the last bit of each has crossed, where it goes, byte).
        self._on_wire: deque[tuple[float, int, int]] = deque()
        self._free_at = 0.0  # when the wire is next free of bytes
        self._request_end = 0.0  # when the last request's last byte crossed

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        self.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def run(self) -> None:
        sources = [self._gateway, self._server, self._wake_r]
        while not self._stopping:
            wait = None
            if self._on_wire:
                wait = max(0.0, self._next_handover() - time.monotonic())
            readable, _, _ = select.select(sources, [], [], wait)
            for fd in readable:
                if fd != self._wake_r:
                    self._send(fd, _read(fd))
            self._deliver()

    def _send(self, source: int, data: bytes) -> None:
        now = time.monotonic()
        if source == self._gateway:
            start, target = max(now, self._free_at), self._server
        else:
            # The slave's answer: after its turnaround, and never over the request.
            start = max(now, self._free_at, self._request_end + self._bus.turnaround)
            target = self._gateway
            if self._bus.corrupt and data:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
        for k, byte in enumerate(data, 1):
            self._on_wire.append((start + k * self._char, target, byte))
        self._free_at = start + len(data) * self._char
        if source == self._gateway:
            self._request_end = self._free_at

    def _next_handover(self) -> float:
        """When to hand bytes on next: when the frame on the wire ends, or ``HANDOVER``
        after its oldest byte crossed, whichever is sooner. A USB adapter does the same
        (an FTDI's latency timer): the last byte of a frame arrives on time, the others
        in chunks, not one wake-up per byte."""
        first, target, _ = self._on_wire[0]
        end = first
        for due, to, _ in self._on_wire:
            if to != target or due > first + HANDOVER:
                break
            end = due
        return end

    def _deliver(self) -> None:
        now = time.monotonic()
        while self._on_wire and self._on_wire[0][0] <= now:
            target = self._on_wire[0][1]
            chunk = bytearray()
            while self._on_wire and self._on_wire[0][0] <= now and self._on_wire[0][1] == target:
                chunk.append(self._on_wire.popleft()[2])
            with contextlib.suppress(BlockingIOError, OSError):
                # A frame nobody reads is lost, as on a bus with no one listening.
                os.write(target, chunk)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EIO):
            return b""  # nothing yet, or no one has the other end open
        raise
