"""Modbus RTU as users run it: `edge-gateway sim modbus` and `edge-gateway run` as
processes on a real pseudo-terminal, readings through a real mosquitto."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from drivers.modbus_rtu.device import METER_REGISTERS
from tests.support.common import wait_until
from tests.support.gateway_proc import TOKEN, DeviceSpec, GatewayProcess
from tests.support.local import parse_samples
from tests.support.modbus import meter_keys
from tests.support.mosquitto import Mosquitto, MqttSubscriber


@pytest.fixture
def modbus_sim(tmp_path: Path) -> Iterator[Path]:
    """A bus of slaves 1, 2 and 3 (3 never answers) as its own process."""
    link = tmp_path / "rs485"
    log = (tmp_path / "sim.log").open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway", "sim", "modbus", "--link", str(link)),
            *("--slaves", "1,2,3", "--silent", "3", "--seed", "5", "--baudrate", "115200"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        yield link
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, (tmp_path / "sim.log").read_text()


async def test_meters_on_one_bus_reach_the_broker_while_a_dead_one_waits(
    modbus_sim: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    gateway_process: GatewayProcess,
) -> None:
    link = modbus_sim
    await wait_until(link.exists, timeout=20, message="simulated bus linked")
    subscriber = subscriber_factory(mosquitto, "edge/+/+/telemetry")
    gw = gateway_process
    gw.devices = [
        DeviceSpec(f"meter-{i}", link, driver="modbus_rtu", keys=meter_keys(i)) for i in (1, 2, 3)
    ]
    gw.mqtt_url = mosquitto.url
    gw.start()
    await gw.wait_healthy()

    def energy(device: str) -> list[int]:
        return [
            r["value"]
            for r in subscriber.readings()
            if r["device"] == device and r["sensor"] == "energy"
        ]

    await wait_until(
        lambda: len(energy("meter-1")) >= 10 and len(energy("meter-2")) >= 10,
        timeout=60,
        message="ten polls of each live meter at the broker",
    )
    status = (await gw.status())["devices"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp,
    ):
        metrics = parse_samples(await resp.text())
    assert gw.terminate() == 0

    readings = subscriber.readings()
    for device in ("meter-1", "meter-2"):
        # Every poll answered and delivered, in order, one reading per register.
        values = energy(device)
        assert values == list(range(values[0], values[0] + len(values)))
        mine = [r for r in readings if r["device"] == device]
        by_sensor = {r["sensor"]: r for r in mine}
        assert set(by_sensor) == {r.sensor for r in METER_REGISTERS}
        assert by_sensor["voltage"]["unit"] == "V"
        assert 210 <= by_sensor["voltage"]["value"] <= 250
        assert by_sensor["model"]["value"] == f"SIM{device[-1]}"
        assert status[device]["state"] == "open"
    assert not [r for r in readings if r["device"] == "meter-3"]
    assert status["meter-3"]["state"] == "waiting"
    assert "slave 3: timeout" in status["meter-3"]["last_error"]
    assert status["meter-3"]["errors"] >= 1
    # Each slave's own status under its device, and in /metrics.
    dead = status["meter-3"]["modbus"]
    assert dead["slave_id"] == 3
    assert dead["state"] in ("failing", "backoff", "dead")
    assert dead["timeouts"] >= 1
    assert dead["last_success"] is None
    live = status["meter-1"]["modbus"]
    assert live["state"] == "ok"
    assert live["timeouts"] == live["crc_errors"] == 0
    assert live["exception_codes"] == {}
    assert live["last_success"] is not None
    assert live["backoff"] == 0
    assert metrics['edge_gateway_device_modbus_timeouts_total{device="meter-3",slave="3"}'] >= 1
    assert (
        metrics['edge_gateway_device_modbus_slave_state{device="meter-1",slave="1",state="ok"}']
        == 1
    )
    assert metrics['edge_gateway_device_modbus_polls_total{device="meter-1",slave="1"}'] >= 10
