"""The modbus_rtu driver against simulated slaves on a real pseudo-terminal, served by
pymodbus's own server: a shared bus, a dead slave, faults counted per slave, writes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from drivers.modbus_rtu import bus as bus_module
from drivers.modbus_rtu.device import METER_REGISTERS
from drivers.modbus_rtu.transport import ModbusRtuDriver
from gateway.errors import DriverError
from simulators.modbus_bus import ModbusBus
from tests.support.common import wait_until
from tests.support.drivers import running
from tests.support.modbus import BAUD, Sink, meter, polled

ONE_BLOCK = tuple(r for r in METER_REGISTERS if r.table == "holding" and r.address < 10)


async def test_a_dead_slave_does_not_stall_the_three_others(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    async with ModbusBus(link, [1, 2, 3, 4], baudrate=BAUD, seed=1) as sim:
        sim.meters[3].silent = True
        # One request a poll (a dead slave's timeout is then worth many polls of the others).
        async with polled(link, [1, 2, 3, 4], registers=ONE_BLOCK) as slaves:
            live = [slaves[i] for i in (1, 2, 4)]
            dead, dead_sink = slaves[3]
            await wait_until(
                lambda: (
                    all(len(s.values("energy")) >= 30 for _, s in live)
                    and dead.slave.state == "dead"
                ),
                timeout=60,
                message="30 polls of each live slave, the silent one given up as dead",
            )
            # One owner for the port, shared by the four devices.
            assert len(bus_module._buses) == 1
            assert bus_module._buses[str(link)].users == 4
            polls = [driver.slave.polls for driver, _ in live]
            timeouts = dead.counts["timeout"]
            states = {i: driver.status.state for i, (driver, _) in slaves.items()}
        assert bus_module._buses == {}
    assert states == {1: "open", 2: "open", 3: "waiting", 4: "open"}
    assert dead.status.readings == 0
    assert dead_sink.samples == []
    assert set(dead.counts) == {"timeout"}
    assert "slave 3: timeout" in (dead.status.last_error or "")
    assert dead.slave.backoff == 1.0  # retry_max, the ceiling
    assert dead.slave.last_success is None
    # Backed off: while each live slave answered 30 polls, the dead one was asked far
    # fewer times.
    assert timeouts * 3 < min(polls), (timeouts, polls)
    # The live slaves kept their poll count: the same for each (the bus is handed out in
    # turn), every poll answered, nothing lost to the dead one.
    assert max(polls) - min(polls) <= 2, polls
    for driver, sink in live:
        assert driver.status.errors == 0
        assert driver.slave.state == "ok"
        assert sum(driver.counts.values()) == 0
        # Every poll was answered: the meter counts its answers.
        energy = sink.values("energy")
        assert energy == list(range(energy[0], energy[0] + len(energy)))
        # One reading per register per poll, a poll per count.
        assert len(energy) == driver.slave.polls
        assert len(sink.samples) == len(energy) * len(ONE_BLOCK)


async def test_readings_carry_scaled_values_and_units(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    async with ModbusBus(link, [7], baudrate=BAUD, seed=2), polled(link, [7]) as slaves:
        _, sink = slaves[7]
        await wait_until(lambda: len(sink.values("door")) >= 2, message="two polls")
    first: dict[str, Any] = {s.sensor: s for s in sink.samples[: len(METER_REGISTERS)]}
    assert set(first) == {r.sensor for r in METER_REGISTERS}
    assert 210 <= first["voltage"].value <= 250
    assert first["voltage"].unit == "V"
    assert first["current"].value == pytest.approx(1.25)
    assert first["frequency"].value == 50.0
    assert first["model"].value == "SIM7"
    assert first["temperature"].unit == "°C"
    assert first["relay"].value is False
    # Little word order and little byte order decode to what the meter holds.
    assert first["flow"].value == 3 * first["energy"].value
    assert first["level"].value == 1000 + first["energy"].value % 100
    assert sink.values("door")[:2] in ([True, False], [False, True])


async def test_exception_responses_and_crc_errors_are_counted_per_slave(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    async with (
        ModbusBus(link, [1, 2], baudrate=BAUD, seed=3) as sim,
        polled(link, [1, 2]) as slaves,
    ):
        (one, one_sink), (two, two_sink) = slaves[1], slaves[2]
        sim.meters[2].exception = ExcCodes.DEVICE_FAILURE
        await wait_until(lambda: two.counts["exception"] >= 8, message="exceptions counted")
        # An exception is an answer: the slave is up, and nothing was read from it.
        assert two.status.state == "open"
        assert "exception code 4" in (two.status.last_error or "")
        assert one.counts == {}
        assert two.slave.state == "failing"
        assert set(two.slave.exception_codes) == {4}
        assert two.slave.as_json()["exception_codes"] == {"4": two.counts["exception"]}
        assert two_sink.dead == []
        sim.meters[2].exception = None
        await wait_until(lambda: len(two_sink.values("energy")) >= 3, message="slave 2 back")

        await wait_until(lambda: two.slave.state == "ok", message="slave 2 ok again")
        sim.corrupt = True
        await wait_until(
            lambda: one.counts["crc error"] >= 2 and two.counts["crc error"] >= 2,
            timeout=30,
            message="CRC errors counted",
        )
        assert one.slave.as_json()["crc_errors"] == one.counts["crc error"]
        sim.corrupt = False
        before = len(one_sink.values("energy"))
        await wait_until(
            lambda: len(one_sink.values("energy")) > before + 3, timeout=30, message="recovery"
        )
        await wait_until(lambda: one.status.state == "open", message="slave 1 open again")
    # Each corrupted answer is a dead letter with the bytes heard: a frame from that slave.
    assert one_sink.dead
    for dead in one_sink.dead:
        assert dead.reason == "modbus crc error"
        assert dead.device == "meter-1"
        assert dead.raw[0] == 1


async def test_writes_go_through_the_bus_and_read_back(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    async with (
        ModbusBus(link, [1, 2], baudrate=BAUD, seed=4) as sim,
        polled(link, [1, 2]) as slaves,
    ):
        (one, one_sink), (two, _) = slaves[1], slaves[2]
        await wait_until(lambda: one.status.state == "open", message="polling")
        await one.write("setpoint", 12.5)
        await one.write("relay", True)
        await wait_until(
            lambda: (
                one_sink.values("setpoint")[-1:] == [12.5]
                and one_sink.values("relay")[-1:] == [True]
            ),
            message="written values read back",
        )
        await one.write("setpoint", -3)
        await wait_until(lambda: one_sink.values("setpoint")[-1:] == [-3.0], message="again")
        with pytest.raises(DriverError, match="voltage is not writable"):
            await one.write("voltage", 230)
        with pytest.raises(DriverError, match="no register named 'volts'"):
            await one.write("volts", 230)
        with pytest.raises(DriverError, match="does not fit int16"):
            await one.write("setpoint", 1e6)
        with pytest.raises(DriverError, match="takes true or false"):
            await one.write("relay", 1)
        sim.meters[2].silent = True
        with pytest.raises(DriverError, match="write of relay failed: timeout"):
            await two.write("relay", True)
        assert two.counts["timeout"] >= 1
        sim.meters[2].silent = False
        await two.write("relay", True)
    assert sim.meters[1].answered > 0


async def test_devices_of_one_port_must_agree_on_its_settings(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    sink = Sink()
    first = ModbusRtuDriver(meter(link, 1), sink)
    other = ModbusRtuDriver(meter(link, 2, baudrate=19200), sink)
    async with ModbusBus(link, [1, 2], baudrate=BAUD), running(first), running(other):
        await wait_until(lambda: other.status.last_error is not None, message="refused")
        await asyncio.sleep(0)
        assert other.status.state == "waiting"
        assert "already open by meter-1 with other serial settings" in str(other.status.last_error)
        await wait_until(lambda: first.status.readings > 0, message="first still reads")


async def test_a_slave_slower_than_its_timeout_counts_timeouts(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    async with ModbusBus(link, [1, 2], baudrate=BAUD, seed=5) as sim:
        sim.meters[1].delay = 0.05  # slow, within its timeout
        sim.meters[2].delay = 1.0  # beyond it
        async with polled(link, [1], timeout=0.5) as fast, polled(link, [2]) as slow:
            (_, one_sink), (two, two_sink) = fast[1], slow[2]
            await wait_until(
                lambda: len(one_sink.values("energy")) >= 3 and two.counts["timeout"] >= 2,
                timeout=30,
                message="the slow slave read, the slower one timed out",
            )
            # Its answers come too late for their requests. RTU frames carry no request
            # id, so one arriving during a later request of the same slave can be taken
            # as its answer (docs/drivers.md says so): only the timeouts are certain.
            assert len(two_sink.values("energy")) < two.slave.polls


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_bus_unplugged_and_plugged_back_is_read_again(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    sink = Sink()
    driver = ModbusRtuDriver(meter(link, 1, retry_max=0.2), sink)
    fds: list[int] = []
    async with running(driver):
        for _ in range(10):
            before = len(sink.values("energy"))

            def read_again(before: int = before) -> bool:
                return len(sink.values("energy")) >= before + 3

            async with ModbusBus(link, [1], baudrate=BAUD):
                await wait_until(read_again, timeout=30, message="read after the plug")
            await wait_until(lambda: driver.status.state == "waiting", message="unplugged")
            fds.append(open_fds())
        # Each unplug is a failure: the port gone, no answer, or an answer cut short.
        assert sum(driver.counts.values()) >= 10
    # Nothing leaks across unplugs: the count after the second equals the last.
    assert fds[1] == fds[-1], fds
