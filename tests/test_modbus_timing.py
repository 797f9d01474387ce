"""Modbus RTU on the wire: the silent interval between frames for the baud rate, the CRC,
and poll intervals per register block."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from pathlib import Path

import pytest
from pymodbus.framer.rtu import FramerRTU

from drivers.modbus_rtu.codec import (
    crc_ok,
    plan,
    read_request,
    read_response_size,
    silent_interval,
    with_crc,
)
from drivers.modbus_rtu.device import METER_REGISTERS
from drivers.modbus_rtu.settings import Register
from drivers.modbus_rtu.transport import ModbusRtuDriver
from simulators.modbus_bus import ModbusBus
from tests.support.common import wait_until
from tests.support.drivers import running
from tests.support.modbus import BAUD, Sink, meter


def test_the_silent_interval_is_three_and_a_half_characters_then_fixed() -> None:
    # 11 bits a character (start, 8 data, parity or a second stop, stop).
    assert silent_interval(9600) == pytest.approx(3.5 * 11 / 9600)  # 4.01 ms
    assert silent_interval(19200) == pytest.approx(3.5 * 11 / 19200)  # 2.005 ms
    # Above 19,200 baud the spec fixes it at 1.75 ms.
    assert silent_interval(38400) == silent_interval(115200) == 0.00175


def test_the_crc_and_the_request_frame_agree_with_pymodbus() -> None:
    for frame in (b"\x01\x03\x00\x00\x00\x0a", b"", bytes(range(256))):
        crc = FramerRTU.compute_CRC(frame)  # pymodbus gives it high byte first
        assert with_crc(frame)[len(frame) :] == crc.to_bytes(2, "big")
    (block, *_) = plan(METER_REGISTERS)
    request = read_request(7, block)
    assert crc_ok(request)
    assert request[:6] == bytes([7, 3, 0, 0, 0, block.count])
    assert not crc_ok(request[:-1] + bytes([request[-1] ^ 1]))
    assert not crc_ok(b"\x01\x03")
    assert read_response_size(block) == 5 + 2 * block.count


def test_registers_of_another_poll_interval_get_requests_of_their_own() -> None:
    registers = [
        Register(sensor="a", address=0),
        Register(sensor="b", address=1, poll_interval=60.0),
        Register(sensor="c", address=2),
        Register(sensor="d", address=3, poll_interval=1.0),  # the device's: one block
    ]
    blocks = plan(registers, interval=1.0)
    assert [(b.address, b.count, b.interval) for b in blocks] == [
        (0, 1, 1.0),
        (2, 2, 1.0),
        (1, 1, 60.0),
    ]


def _raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


async def test_the_bus_keeps_the_silent_interval_after_each_answer(tmp_path: Path) -> None:
    """A slave played by the test on a real pty answers each request at once; the gap
    from its answer to the next request is what the gateway left silent. At 1,200 baud
    the interval is 32 ms: far longer than the gateway needs to send again."""
    baudrate = 1200
    master, slave_fd, path = _raw_pty()
    link = tmp_path / "rs485"
    link.symlink_to(path)
    loop = asyncio.get_running_loop()
    heard = bytearray()
    answered_at: float | None = None
    gaps: list[float] = []

    def on_request() -> None:
        nonlocal answered_at
        try:
            heard.extend(os.read(master, 4096))
        except BlockingIOError:
            return
        while len(heard) >= 8:
            now = time.monotonic()
            request, heard[:] = bytes(heard[:8]), heard[8:]
            assert crc_ok(request), request.hex()
            if answered_at is not None:
                gaps.append(now - answered_at)
            os.write(master, with_crc(bytes([request[0], 3, 2, 0, len(gaps)])))
            answered_at = time.monotonic()

    loop.add_reader(master, on_request)
    register = Register(sensor="n", address=0)
    sink = Sink()
    driver = ModbusRtuDriver(
        meter(link, 1, baudrate=baudrate, registers=(register,), poll_interval=0.001), sink
    )
    try:
        async with running(driver):
            await wait_until(lambda: len(gaps) >= 10, timeout=30, message="ten request gaps")
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave_fd)
    assert min(gaps) >= silent_interval(baudrate), gaps
    assert driver.status.errors == 0
    assert len(sink.values("n")) >= 10


async def test_each_block_is_read_at_its_own_interval(tmp_path: Path) -> None:
    """A fast voltage every 20 ms beside a slow uptime every second: counts of readings,
    not times, show the two paces."""
    link = tmp_path / "rs485"
    registers = (
        Register(sensor="voltage", address=0, scale=0.1),
        Register(sensor="uptime", address=10, type="int64", poll_interval=1.0),
    )
    sink = Sink()
    driver = ModbusRtuDriver(meter(link, 1, registers=registers, poll_interval=0.02), sink)
    async with ModbusBus(link, [1], baudrate=BAUD, seed=6), running(driver):
        await wait_until(
            lambda: len(sink.values("voltage")) >= 50, timeout=60, message="50 fast reads"
        )
    fast, slow = len(sink.values("voltage")), len(sink.values("uptime"))
    assert [b.interval for b in driver.blocks] == [0.02, 1.0]
    # 50 intervals apart; a loaded machine delays both, so only a wide margin is asserted.
    assert 1 <= slow <= fast // 5, (fast, slow)
    assert driver.slave.state == "ok"


async def test_the_simulated_bus_moves_bytes_at_its_baud_rate(tmp_path: Path) -> None:
    """A request and its answer take on the simulated wire at least what they take on a
    real one: their characters at 11 bits each, and the slave's turnaround between."""
    link = tmp_path / "rs485"
    baudrate = 1200
    block = plan([Register(sensor="n", address=0)])[0]
    request = read_request(1, block)
    async with ModbusBus(link, [1], baudrate=baudrate, seed=7) as sim:
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        try:
            answer = bytearray()
            sent = time.monotonic()
            os.write(fd, request)

            def whole() -> bool:
                with contextlib.suppress(BlockingIOError):
                    answer.extend(os.read(fd, 4096))
                return len(answer) >= read_response_size(block)

            await wait_until(whole, timeout=20, interval=0.001, message="the answer")
            took = time.monotonic() - sent
        finally:
            os.close(fd)
    assert crc_ok(bytes(answer))
    chars = len(request) + len(answer)
    assert took >= chars * 11 / baudrate + sim.turnaround
    assert sim.turnaround == silent_interval(baudrate)  # the least a slave may wait
