"""Every serial driver unplugged and plugged back in, again and again, in the real gateway
process: each time it notices, reads again, and its open file descriptors stay flat.

serial_line, nmea and framed devices are simulated ptys pulled like USB adapters; the
Modbus bus is a simulated bus taken away and brought back. The four cycle at once. The
default suite runs 10 cycles each; ``make soak`` runs 200.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from drivers.framed.device import SIM_FIELDS_TOML
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.modbus import BAUD, PluggableBus, meter_keys

# Status is polled this often while waiting: quick, without loading a busy machine.
POLL = 0.05
# Descriptors the gateway may hold beyond the first count for a moment (an HTTP
# connection of the status polling not yet closed); a leak of one per cycle is far more.
SLACK = 3


class Pluggable:
    """A device the test can pull and plug back in: a pty device or a Modbus bus."""

    def __init__(
        self, unplug: Callable[[], Awaitable[None]], replug: Callable[[], Awaitable[None]]
    ) -> None:
        self.unplug = unplug
        self.replug = replug


def _pty(device: PtyDevice) -> Pluggable:
    async def replug() -> None:
        device.replug()

    return Pluggable(device.unplug, replug)


async def _cycle(gw: GatewayProcess, device_id: str, device: Pluggable) -> None:
    """Pull the device, wait until the gateway notices, plug it back, wait for a reading."""

    async def mine() -> dict[str, Any]:
        status: dict[str, Any] = (await gw.status())["devices"][device_id]
        return status

    await device.unplug()

    async def noticed() -> bool:
        return bool((await mine())["state"] != "open")

    await wait_until(noticed, timeout=30, interval=POLL, message=f"{device_id} unplugged")
    before = (await mine())["readings"]
    await device.replug()

    async def read_again() -> bool:
        return bool((await mine())["readings"] > before)

    await wait_until(read_again, timeout=30, interval=POLL, message=f"{device_id} read again")


async def _unplug_all(tmp_path: Path, gw: GatewayProcess, times: int) -> list[int]:
    """Run ``times`` rounds of unplug/replug of each driver's device; the gateway's open
    descriptors after each round."""
    fields = tomllib.loads(SIM_FIELDS_TOML)["devices"]["fields"]
    line, gps, node = (tmp_path / n for n in ("counter", "gps", "node"))
    rs485 = tmp_path / "rs485"
    keys = {**meter_keys(1), "baudrate": BAUD, "poll_interval": "50ms", "retry_max": "200ms"}
    gw.devices = [
        DeviceSpec("line-1", line),
        DeviceSpec("gps-1", gps, driver="nmea", keys={}),
        DeviceSpec("node-1", node, driver="framed", keys={"fields": fields}),
        DeviceSpec("meter-1", rs485, driver="modbus_rtu", keys=keys),
    ]
    async with (
        PtyDevice("counter", line, rate=50) as counter,
        PtyDevice("gps", gps, rate=20) as receiver,
        PtyDevice("framed", node, rate=50) as micro,
        PluggableBus(rs485, [1]) as bus,
    ):
        devices = {
            "line-1": _pty(counter),
            "gps-1": _pty(receiver),
            "node-1": _pty(micro),
            "meter-1": Pluggable(bus.unplug, bus.replug),
        }
        gw.start()
        await gw.wait_healthy()

        async def all_read() -> bool:
            status = (await gw.status())["devices"]
            return all(status[d]["readings"] > 0 for d in devices)

        await wait_until(all_read, timeout=30, interval=POLL, message="every device read")
        assert gw.proc is not None
        process = psutil.Process(gw.proc.pid)
        fds = [process.num_fds()]
        # Rounds of one cycle per device, the four at once, counted between rounds.
        for _ in range(times):
            async with asyncio.TaskGroup() as tg:
                for device_id, device in devices.items():
                    tg.create_task(_cycle(gw, device_id, device))
            fds.append(min(process.num_fds() for _ in range(3)))
        status = (await gw.status())["devices"]
    assert gw.terminate() == 0
    assert all(status[d]["reconnects"] >= 1 or d == "meter-1" for d in devices), status
    return fds


def _assert_flat(fds: list[int]) -> None:
    # After the first round (which may open what stays open: a client object, a log
    # handle) the count does not grow with the cycles.
    assert max(fds[1:]) <= fds[1] + SLACK, fds


async def test_each_serial_driver_unplugged_10_times_keeps_its_fds(
    tmp_path: Path, gateway_process: GatewayProcess
) -> None:
    _assert_flat(await _unplug_all(tmp_path, gateway_process, 10))


@pytest.mark.soak
@pytest.mark.timeout(3600)
async def test_each_serial_driver_unplugged_200_times_keeps_its_fds(
    tmp_path: Path, gateway_process: GatewayProcess
) -> None:
    _assert_flat(await _unplug_all(tmp_path, gateway_process, 200))
