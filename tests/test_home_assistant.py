"""Home Assistant discovery on an MQTT uplink, against a real mosquitto: the whole
gateway in this process, its gpio outputs on gpiozero's mock pins (as in
tests/test_gpio_output_commands.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gpiozero
import jinja2.sandbox
import paho.mqtt.publish as publish
import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.commands.router import CommandRouter
from gateway.config import parse_config
from gateway.reading import Sample
from gateway.uplinks.home_assistant import configured_entities, device_class
from tests.support.common import wait_until
from tests.support.drivers import wait_open
from tests.support.mosquitto import Mosquitto, MqttSubscriber, Received

GATEWAY = "gw-ha"
CONFIGS = "homeassistant/+/gw-ha/+/config"
STALE = "homeassistant/sensor/gw-ha/old_t/config"


def configs(subscriber: MqttSubscriber) -> dict[str, Received]:
    """The newest config per topic (an empty payload clears one)."""
    return {m.topic: m for m in subscriber.messages("/config")}


def config(subscriber: MqttSubscriber, topic: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(configs(subscriber)[topic].payload)
    return body


def render(template: str, message: dict[str, Any], state: str = "21") -> str:
    """``template`` rendered as Home Assistant renders a value template (sandboxed Jinja,
    the JSON payload as ``value_json``, the entity as ``this``)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    this = {"state": state}
    return env.from_string(template).render(value_json=message, this=this).strip()


def telemetry(*readings: tuple[str, object]) -> dict[str, Any]:
    body = [
        {"seq": i, "ts": 0.0, "device": "d", "sensor": s, "value": v}
        for i, (s, v) in enumerate(readings)
    ]
    return {"gateway": GATEWAY, "device": "d", "readings": body}


def settings_for(broker: Mosquitto, tmp_path: Path) -> Any:
    return parse_config(
        {
            "gateway": {"id": GATEWAY, "data_dir": str(tmp_path / "data")},
            "devices": [
                {
                    "id": "thermo",
                    "driver": "serial_line",
                    "port": str(tmp_path / "no-such-port"),
                    "units": {"t": "°C", "h": "%", "v": "V"},
                },
                {"id": "pump", "driver": "gpio_output", "pin": 23},
                {"id": "fan", "driver": "gpio_output", "pin": 24},
                # Not carried by the uplink: not announced.
                {"id": "other", "driver": "serial_line", "port": "/dev/x", "units": {"t": "°C"}},
            ],
            "uplinks": [
                {
                    "name": "site",
                    "url": broker.url,
                    "home_assistant": True,
                    "devices": ["thermo", "pump", "fan"],
                }
            ],
            "commands": {
                "allow": ["device.write"],
                # Only the pump may be written; the fan's switch is refused by the router.
                "writes": [{"device": "pump", "sensor": "state", "min": 0, "max": 1}],
            },
        },
        None,
    )


@pytest.mark.timeout(60)
async def test_discovery_and_writes_through_the_router(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
) -> None:
    factory = MockFactory()
    monkeypatch.setattr(gpiozero.Device, "pin_factory", factory)
    # A config left by an earlier run for a device no longer configured.
    stale = {"name": "t", "device": {"identifiers": [f"{GATEWAY}_old"]}}
    publish.single(
        STALE, json.dumps(stale), qos=1, retain=True, hostname=mosquitto.host, port=mosquitto.port
    )
    live = subscriber_factory(mosquitto, CONFIGS)
    gateway = Gateway(settings_for(mosquitto, tmp_path))
    task = asyncio.create_task(gateway.run())
    try:
        pump = "homeassistant/switch/gw-ha/pump_state/config"
        fan = "homeassistant/switch/gw-ha/fan_state/config"
        await wait_until(lambda: pump in configs(live), message="the pump's config")
        await wait_until(
            lambda: configs(live).get(STALE, Received("", b"x", False)).payload == b"",
            message="the stale config cleared",
        )

        # Retained: a client that comes later gets every config.
        late = subscriber_factory(mosquitto, CONFIGS)
        await wait_until(lambda: fan in configs(late), message="retained configs")
        held = configs(late)
        assert all(m.retain for m in held.values())
        assert STALE not in held
        assert not [topic for topic in held if "other" in topic]
        t = config(late, "homeassistant/sensor/gw-ha/thermo_t/config")
        assert t["unit_of_measurement"] == "°C"
        assert t["device_class"] == "temperature"
        assert t["unique_id"] == "gw-ha_thermo_t"
        assert t["state_topic"] == "edge/gw-ha/thermo/telemetry"
        # The latest of this sensor's readings; none in the message: ignored (empty).
        message = telemetry(("t", 20.5), ("h", 40), ("t", 21.5))
        assert render(t["value_template"], message) == "21.5"
        assert render(t["value_template"], telemetry(("h", 40))) == ""
        assert t["device"] == {
            "identifiers": ["gw-ha_thermo"],
            "name": "thermo",
            "via_device": GATEWAY,
        }
        # Availability from the retained status topic, whose payload is JSON.
        assert t["availability"] == [
            {
                "topic": "edge/gw-ha/status",
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]
        assert config(late, "homeassistant/sensor/gw-ha/thermo_h/config")["device_class"] == (
            "humidity"
        )
        assert config(late, "homeassistant/sensor/gw-ha/thermo_v/config")["device_class"] == (
            "voltage"
        )
        switch = config(late, pump)
        assert switch["command_topic"] == "edge/gw-ha/ha/pump/state/set"
        assert "device_class" not in switch
        assert render(switch["value_template"], telemetry(("state", 1.0))) == "ON"
        assert render(switch["value_template"], telemetry(("state", 0))) == "OFF"

        # A sensor no configuration names is announced the first time it is sent.
        assert gateway.store is not None
        gateway.store.put_samples([Sample("thermo", "rpm", 1200, time.time())])
        rpm = "homeassistant/sensor/gw-ha/thermo_rpm/config"
        await wait_until(lambda: rpm in configs(live), message="the lazy config")
        assert "device_class" not in config(live, rpm)

        # Switching from Home Assistant: a device.write through the router.
        await wait_until(lambda: "pump" in gateway.drivers, message="the pump started")
        await wait_until(lambda: "fan" in gateway.drivers, message="the fan started")
        await wait_open(gateway.drivers["pump"])
        await wait_open(gateway.drivers["fan"])
        router = gateway.commands
        assert isinstance(router, CommandRouter)
        # Home Assistant subscribes before the commands: their SUBACK covers both.
        await wait_until(lambda: router.status.subscribed, message="subscribed")
        host, port = mosquitto.host, mosquitto.port
        publish.single(switch["command_topic"], "ON", qos=1, hostname=host, port=port)
        await wait_until(lambda: factory.pin("GPIO23").state is True, message="the pump on")
        # Recorded once answered (after the journal has it).
        await wait_until(lambda: bool(router.status.recent), message="the write recorded")
        assert router.status.recent[-1]["via"] == "home_assistant"
        assert router.status.executed[("device.write", "ok")] == 1

        # The fan has no write rule: refused by the router, counted, the pin untouched.
        command = config(late, fan)["command_topic"]
        publish.single(command, "ON", qos=1, hostname=host, port=port)
        await wait_until(
            lambda: router.status.refused.get("bad_args", 0) == 1, message="the refusal"
        )
        assert factory.pin("GPIO24").state is False
    finally:
        gateway.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


def test_modbus_registers_become_sensors_numbers_and_switches(tmp_path: Path) -> None:
    settings = parse_config(
        {
            "gateway": {"id": GATEWAY, "data_dir": str(tmp_path)},
            "devices": [
                {
                    "id": "meter",
                    "driver": "modbus_rtu",
                    "port": "/dev/x",
                    "slave_id": 1,
                    "registers": [
                        {"sensor": "voltage", "table": "input", "address": 0, "unit": "V"},
                        {"sensor": "energy", "table": "input", "address": 1, "unit": "kWh"},
                        {"sensor": "setpoint", "address": 2, "writable": True, "scale": 0.5},
                        {
                            "sensor": "relay",
                            "table": "coil",
                            "type": "bool",
                            "address": 0,
                            "writable": True,
                        },
                        {"sensor": "load", "table": "input", "address": 3, "unit": "%"},
                    ],
                    "transforms": [{"sensor": "voltage", "rename": "u"}],
                }
            ],
        },
        None,
    )
    entities, fixed = configured_entities(settings.devices[0])
    assert fixed
    shown = {e.sensor: (e.component, e.unit, device_class(e.sensor, e.unit)) for e in entities}
    assert shown == {
        "u": ("sensor", "V", "voltage"),  # renamed by its transform
        "energy": ("sensor", "kWh", "energy"),
        "setpoint": ("number", None, None),
        "relay": ("switch", None, None),
        "load": ("sensor", "%", None),  # a percentage, but not humidity
    }
    assert next(e for e in entities if e.sensor == "setpoint").step == 0.5
