"""Writes to Modbus registers from the cloud, as users run them: `edge-gateway sim modbus`
and `edge-gateway run` as processes on a real pseudo-terminal, an MQTT 5 client sending
`device.write` and `device.read` through a real mosquitto, the written values read back
by the next polls on telemetry."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from drivers.modbus_rtu.device import METER_REGISTERS
from tests.support.commands import REPLIES, CommandClient, subscribed
from tests.support.common import wait_until
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.modbus import meter_keys
from tests.support.mosquitto import Mosquitto, MqttSubscriber

WRITABLE = {r.sensor for r in METER_REGISTERS if r.writable}


def writable_meter_keys(slave_id: int, sensors: set[str] | None = None) -> dict[str, Any]:
    """The keys of a simulated meter with its writable registers marked so; only
    ``sensors`` of its map when given."""
    keys = meter_keys(slave_id)
    registers: list[dict[str, Any]] = keys["registers"]  # type: ignore[assignment]
    keys["registers"] = [
        {**entry, "writable": entry["sensor"] in WRITABLE}
        for entry in registers
        if sensors is None or entry["sensor"] in sensors
    ]
    # A live slave must never seem dead on a loaded machine.
    keys["poll_interval"] = "200ms"
    keys["timeout"] = "2s"
    return keys


@pytest.fixture
def refusing_bus(tmp_path: Path) -> Iterator[Path]:
    """A bus of slave 1 and slave 2, which answers every request with exception 4."""
    link = tmp_path / "rs485"
    log = (tmp_path / "sim.log").open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway", "sim", "modbus", "--link", str(link)),
            *("--slaves", "1,2", "--exception", "2", "--seed", "7", "--baudrate", "115200"),
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


class Cloud(CommandClient):
    """An MQTT 5 client asking with a response topic and correlation data."""

    async def request(self, command: str, request_id: str, args: dict[str, Any]) -> Any:
        correlation = request_id.encode()
        self.send(command, {"id": request_id, "args": args}, correlation=correlation)
        await wait_until(lambda: bool(self.answers_to(request_id)), timeout=30, message=request_id)
        topic, body, got = self.answers_to(request_id)[0]
        assert (topic, got) == (REPLIES, correlation)
        return body


@pytest.mark.timeout(180)
async def test_a_write_is_answered_once_the_slave_confirmed_and_read_back(
    refusing_bus: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    gateway_process: GatewayProcess,
) -> None:
    link = refusing_bus
    await wait_until(link.exists, timeout=20, message="simulated bus linked")
    telemetry = subscriber_factory(mosquitto, "edge/+/+/telemetry")
    gw = gateway_process
    gw.mqtt_url = mosquitto.url
    gw.devices = [
        DeviceSpec("meter-1", link, driver="modbus_rtu", keys=writable_meter_keys(1)),
        DeviceSpec("meter-2", link, driver="modbus_rtu", keys=writable_meter_keys(2, {"setpoint"})),
    ]
    gw.more_config = {
        "commands": {
            "allow": ["device.write", "device.read"],
            "max_per_second": 1000,
            "writes": [
                {"device": "meter-1", "sensor": "setpoint", "min": 5, "max": 30},
                {"device": "meter-1", "sensor": "relay"},
                # Allowed here, but the register map says it is not writable.
                {"device": "meter-1", "sensor": "voltage"},
                {"device": "meter-2", "sensor": "setpoint"},
            ],
        }
    }
    gw.start()
    await gw.wait_healthy()
    await subscribed(gw)

    def polled(sensor: str) -> list[Any]:
        return [
            r["value"]
            for r in telemetry.readings()
            if r["device"] == "meter-1" and r["sensor"] == sensor
        ]

    await wait_until(lambda: bool(polled("setpoint")), timeout=30, message="meter-1 polled")
    assert set(polled("setpoint")) == {0}
    cloud = Cloud(mosquitto, mqtt.MQTTv5, "cloud-writes")
    try:
        setpoint = await cloud.request(
            "device.write", "w-setpoint", {"device": "meter-1", "sensor": "setpoint", "value": 21.5}
        )
        assert setpoint == {
            "id": "w-setpoint",
            "ok": True,
            "result": {"device": "meter-1", "sensor": "setpoint", "value": 21.5, "confirmed": 21.5},
        }
        relay = await cloud.request(
            "device.write", "w-relay", {"device": "meter-1", "sensor": "relay", "value": True}
        )
        assert relay["ok"] is True
        assert relay["result"]["confirmed"] is True
        # Asked after the answers: the slave already held both values.
        read = await cloud.request("device.read", "r-1", {"device": "meter-1"})
        assert read["ok"] is True
        values = read["result"]["values"]
        assert (values["setpoint"], values["relay"]) == (21.5, True)
        assert values["model"] == "SIM1"
        # And the polls read them back, on telemetry.
        await wait_until(
            lambda: polled("setpoint")[-1:] == [21.5] and polled("relay")[-1:] == [True],
            timeout=30,
            message="written values polled back",
        )

        refused = await cloud.request(
            "device.write", "w-refused", {"device": "meter-2", "sensor": "setpoint", "value": 3}
        )
        assert refused == {
            "id": "w-refused",
            "ok": False,
            "error": "meter-2: slave 2 refused the write of setpoint: "
            "Modbus exception code 4 (slave device failure)",
        }
        too_high = await cloud.request(
            "device.write", "w-high", {"device": "meter-1", "sensor": "setpoint", "value": 40}
        )
        assert too_high["ok"] is False
        assert "above the allowed maximum 30" in too_high["error"]
        not_listed = await cloud.request(
            "device.write", "w-current", {"device": "meter-1", "sensor": "current", "value": 1}
        )
        assert not_listed["ok"] is False
        assert "writing 'current' of 'meter-1' is not allowed here" in not_listed["error"]
        read_only = await cloud.request(
            "device.write", "w-voltage", {"device": "meter-1", "sensor": "voltage", "value": 230}
        )
        assert read_only == {
            "id": "w-voltage",
            "ok": False,
            "error": "meter-1: voltage is not writable",
        }
        # None of the refused writes changed the slave (tests/test_modbus_read_now.py
        # shows that they send no request at all).
        after = await cloud.request("device.read", "r-2", {"device": "meter-1"})
        assert after["result"]["values"]["setpoint"] == 21.5
    finally:
        cloud.stop()
    assert gw.terminate() == 0
