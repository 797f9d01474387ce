"""A simulated Modbus RTU bus on a pseudo-terminal: several slaves behind one port.

pymodbus's serial server opens a port by name, and the gateway needs a name too, so
the bus is two pseudo-terminals joined back to back: the gateway opens the one linked
at ``link``, the server the other, and the bytes are copied between their masters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer

from drivers.modbus_rtu.device import SimulatedMeter
from simulators.pty_link import open_raw_pty, point_link, remove_link


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
        self._fds: list[int] = []
        self._server: ModbusSerialServer | None = None

    async def __aenter__(self) -> ModbusBus:
        outer_master, outer_slave, outer_path = open_raw_pty()
        inner_master, inner_slave, inner_path = open_raw_pty()
        self._fds = [outer_master, outer_slave, inner_master, inner_slave]
        loop = asyncio.get_running_loop()
        loop.add_reader(outer_master, self._copy, outer_master, inner_master, False)
        loop.add_reader(inner_master, self._copy, inner_master, outer_master, True)
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

    def _copy(self, source: int, target: int, answer: bool) -> None:
        try:
            data = os.read(source, 4096)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EIO):
                return  # nothing yet, or no one has the other end open
            raise
        if answer and self.corrupt and data:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        with contextlib.suppress(BlockingIOError):
            # A frame nobody reads is lost, as on a bus with no one listening.
            os.write(target, data)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        loop = asyncio.get_running_loop()
        remove_link(self.link, self.slave_path)
        for fd in self._fds[::2]:
            loop.remove_reader(fd)
        for fd in self._fds:
            os.close(fd)
        self._fds = []
