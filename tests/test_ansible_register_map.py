"""The Ansible role's configuration template writes a register map (a list of mappings in
YAML) as TOML the gateway reads. Rendered with Jinja2 alone, as Ansible renders it, so
it runs in the default suite without a playbook run (tests/test_ansible_role.py runs
the role itself)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jinja2

from drivers.modbus_rtu.settings import ModbusRtuSettings, Register
from gateway.config import parse_config

TEMPLATES = Path(__file__).resolve().parents[1] / "ansible/roles/edge_gateway/templates"


def render(devices: list[dict[str, Any]]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # TOML, not HTML
    )
    # Ansible's to_json is json.dumps with the filter's keyword arguments.
    env.filters["to_json"] = json.dumps
    return env.get_template("gateway.toml.j2").render(
        ansible_managed="managed by Ansible",
        edge_gateway_id="gw-1",
        edge_gateway_prefixed_data_dir="/var/lib/edge-gateway",
        edge_gateway_log_level="info",
        edge_gateway_store={},
        edge_gateway_devices=devices,
        edge_gateway_health={},
        edge_gateway_mqtt_url="",
        edge_gateway_local_listen="127.0.0.1:8080",
        edge_gateway_local_options={},
        edge_gateway_prefixed_config_dir="/etc/edge-gateway",
    )


def test_a_register_map_renders_to_the_settings_it_declares() -> None:
    meter = {
        "id": "meter-1",
        "driver": "modbus_rtu",
        "port": "/dev/ttyUSB0",
        "slave_id": 3,
        "poll_interval": "500ms",
        "registers": [
            {"sensor": "voltage", "address": 0, "scale": 0.1, "unit": "V"},
            {"sensor": "name", "table": "input", "address": 8, "type": "string", "length": 4},
            {"sensor": "relay", "table": "coil", "address": 0, "type": "bool", "writable": True},
        ],
    }
    thermo: dict[str, Any] = {"id": "t", "driver": "serial_line", "port": "/dev/y"}
    thermo["format"] = "csv"
    thermo |= {"columns": ["t", "h"], "units": {"t": "°C"}}
    rendered = tomllib.loads(render([meter, thermo]))
    devices = parse_config({"devices": rendered["devices"]}, None).devices
    assert devices[0] == ModbusRtuSettings(
        id="meter-1",
        port="/dev/ttyUSB0",
        slave_id=3,
        poll_interval=0.5,
        registers=(
            Register(sensor="voltage", address=0, scale=0.1, unit="V"),
            Register(sensor="name", table="input", address=8, type="string", length=4),
            Register(sensor="relay", table="coil", address=0, type="bool", writable=True),
        ),
    )
    assert devices[1].columns == ("t", "h")  # type: ignore[attr-defined]
    assert devices[1].units == {"t": "°C"}
