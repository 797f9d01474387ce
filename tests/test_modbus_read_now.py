"""modbus_rtu on demand: ``read_now`` polls now and ``write`` answers once the slave
confirmed, both through the bus owner, against pymodbus's own server on a real
pseudo-terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymodbus.constants import ExcCodes

from drivers.modbus_rtu import bus as bus_module
from drivers.modbus_rtu.device import METER_REGISTERS
from gateway.errors import DriverError
from simulators.modbus_bus import ModbusBus
from tests.support.common import wait_until
from tests.support.modbus import BAUD, polled

# Long enough that no scheduled poll comes between the first one and the test's requests.
QUIET = {"poll_interval": 3600.0}


async def test_read_now_polls_the_slave_now_and_stores_the_readings(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    async with ModbusBus(link, [1], baudrate=BAUD, seed=3), polled(link, [1], **QUIET) as slaves:
        driver, sink = slaves[1]
        await wait_until(lambda: bool(sink.values("energy")), message="first poll")
        first = sink.values("energy")[-1]
        values = await driver.read_now()
        again = await driver.read_now()
    assert set(values) == {r.sensor for r in METER_REGISTERS}
    assert values["model"] == "SIM1"
    # The meter counts the reads it answered: each read_now was a poll of its own.
    assert values["energy"] == first + 1
    assert again["energy"] == first + 2
    # Stored like a poll's readings.
    assert sink.values("energy")[-2:] == [first + 1, first + 2]


async def test_read_now_fails_with_the_reason_when_the_slave_does_not_answer(
    tmp_path: Path,
) -> None:
    link = tmp_path / "rs485"
    async with (
        ModbusBus(link, [1], baudrate=BAUD, seed=3) as sim,
        polled(link, [1], **QUIET) as slaves,
    ):
        driver, sink = slaves[1]
        await wait_until(lambda: bool(sink.samples), message="first poll")
        sim.meters[1].silent = True
        with pytest.raises(DriverError, match="meter-1: read failed: timeout"):
            await driver.read_now()
        sim.meters[1].silent = False
        sim.meters[1].exception = ExcCodes.DEVICE_FAILURE
        with pytest.raises(DriverError, match=r"exception code 4 \(slave device failure\)"):
            await driver.read_now()


async def test_a_write_is_confirmed_by_the_slave_before_it_returns(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    async with (
        ModbusBus(link, [1], baudrate=BAUD, seed=4) as sim,
        polled(link, [1], **QUIET) as slaves,
    ):
        driver, sink = slaves[1]
        await wait_until(lambda: bool(sink.samples), message="first poll")
        # Rounded to what the int16 with scale 0.5 holds: the value the slave now has.
        assert await driver.write("setpoint", 21.3) == 21.5
        assert await driver.write("relay", True) is True
        # Nothing polled in between: the slave held the values when write returned.
        values = await driver.read_now()
        assert (values["setpoint"], values["relay"]) == (21.5, True)

        bus = bus_module._buses[str(link)]
        sent = bus.requests
        for sensor, value, reason in (
            ("voltage", 230, "voltage is not writable"),
            ("volts", 1, "no register named 'volts'"),
            ("setpoint", 1e6, "does not fit int16"),
        ):
            with pytest.raises(DriverError, match=reason):
                await driver.write(sensor, value)
        # Refused before the bus was asked.
        assert bus.requests == sent

        sim.meters[1].exception = ExcCodes.ILLEGAL_VALUE
        with pytest.raises(DriverError) as refused:
            await driver.write("setpoint", 10)
        assert str(refused.value) == (
            "meter-1: slave 1 refused the write of setpoint: "
            "Modbus exception code 3 (illegal data value)"
        )
        assert driver.counts["exception"] == 1
        sim.meters[1].exception = None
        assert (await driver.read_now())["setpoint"] == 21.5
