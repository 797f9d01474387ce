"""The driver registry: drivers found through entry points, never imported by the core."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

import pytest

from gateway.config import parse_config
from gateway.config_docs import devices_section
from gateway.driver_registry import ENTRY_POINT_GROUP, DriverSpec, drivers
from gateway.errors import ConfigError, ConfigProblem
from gateway.fields import Given, check_table, choice, key, tables, text
from gateway.settings import DeviceSettings, driver_tag
from tests.support.imports import imported_modules

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_never_imports_a_driver_module() -> None:
    sources = sorted((ROOT / "gateway").rglob("*.py"))
    assert len(sources) > 20
    for path in sources:
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top != "drivers", f"{path.relative_to(ROOT)} imports {module}"


def test_the_shipped_drivers_are_declared_as_entry_points() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert declared == {
        "serial_line": "drivers.serial_line:DRIVER",
        "gpio_input": "drivers.gpio_input:DRIVER",
        "nmea": "drivers.nmea:DRIVER",
        "framed": "drivers.framed:DRIVER",
        "modbus_rtu": "drivers.modbus_rtu:DRIVER",
        "onewire": "drivers.onewire:DRIVER",
        "gpio_output": "drivers.gpio_output:DRIVER",
        "adc": "drivers.adc:DRIVER",
    }
    # The installed metadata is what the gateway reads: it must match the file.
    installed = {p.name: p.value for p in entry_points(group=ENTRY_POINT_GROUP)}
    assert installed == declared
    assert list(drivers()) == sorted(declared)
    for name, spec in drivers().items():
        assert spec.name == name
        assert issubclass(spec.settings, DeviceSettings)
        assert spec.settings.__dataclass_fields__["driver"].default == name


# A driver with a register map, as a Modbus driver would declare it: nested tables are
# checked, reported by path and documented by the same machinery as the device's keys.

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    sensor: str = field(metadata=key(text, "string", "The sensor name of its readings."))
    type: RegisterType = field(
        default="uint16",
        metadata=key(choice(("int16", "uint16", "int32", "uint32", "float32")), "string", "How."),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterSettings(DeviceSettings):
    driver: Literal["meter"] = driver_tag("meter")
    port: str = field(metadata=key(text, "string", "The bus."))
    registers: tuple[Register, ...] = field(
        default=(), metadata=tables(Register, "The register map, one table per register.")
    )

    def cross_check(self, keys: Given) -> list[tuple[str, str]]:
        if keys.ok("registers") and not self.registers:
            return [("registers", "must name at least one register")]
        return []


def meter(registers: object) -> dict[str, object]:
    return {"id": "m", "driver": "meter", "port": "/dev/x", "registers": registers}


def test_nested_tables_are_checked_and_named_by_their_path() -> None:
    found: list[ConfigProblem] = []
    registers = [
        {"sensor": "voltage"},
        {"sensor": "current", "type": "unit16", "scale": 2},
        {"type": "float32"},
    ]
    checked = check_table(MeterSettings, meter(registers), "devices[2]", found)
    assert checked.settings is None or checked.given.bad == {"registers"}
    assert [str(p) for p in found] == [
        'devices[2].registers[1].type: must be one of "int16", "uint16", "int32", "uint32", '
        '"float32" (got "unit16") (did you mean "uint16"?)',
        "devices[2].registers[1].scale: unknown key",
        "devices[2].registers[2].sensor: required",
    ]


def test_nested_tables_become_settings_and_cross_checks_see_them() -> None:
    found: list[ConfigProblem] = []
    registers = [{"sensor": "voltage"}, {"sensor": "power", "type": "float32"}]
    checked = check_table(MeterSettings, meter(registers), "devices[0]", found)
    assert found == []
    assert checked.settings.registers == (
        Register(sensor="voltage"),
        Register(sensor="power", type="float32"),
    )
    check_table(MeterSettings, meter([]), "devices[0]", found)
    assert [str(p) for p in found] == ["devices[0].registers: must name at least one register"]
    found.clear()
    check_table(MeterSettings, meter({"sensor": "x"}), "devices[0]", found)
    assert [str(p) for p in found] == [
        "devices[0].registers: must be an array of tables ([[….registers]] sections)"
    ]


def test_nested_tables_are_documented_under_their_driver() -> None:
    spec = DriverSpec("meter", MeterSettings, create=lambda s, sink: None, summary="A meter.")  # type: ignore[arg-type, return-value]
    section = devices_section({"meter": spec})
    assert "### Keys of `meter`" in section
    assert "| `registers` | array of tables | `[]` |" in section
    assert "#### `[[devices.registers]]` of `meter`" in section
    assert '| `type` | string | `"uint16"` | How. |' in section
    assert "| `sensor` | string | required |" in section
    assert {f.name for f in dataclasses.fields(Register)} == {"sensor", "type"}


# A driver shipped as a package of its own -----------------------------------------

PLUGIN = """
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from gateway.driver_registry import DriverSpec
from gateway.fields import choice, key, tables, text
from gateway.settings import DeviceSettings, driver_tag
from tests.support.imports import imported_modules


@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    sensor: str = field(metadata=key(text, "string", "Its sensor."))
    type: str = field(
        default="uint16", metadata=key(choice(("uint16", "float32")), "string", "Its type.")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterSettings(DeviceSettings):
    driver: Literal["acme_meter"] = driver_tag("acme_meter")
    registers: tuple[Register, ...] = field(default=(), metadata=tables(Register, "The map."))


def create(settings, sink):
    # The package is only found, checked and documented here; no device of it runs.
    raise RuntimeError("the acme_meter test package runs no device")


DRIVER = DriverSpec("acme_meter", MeterSettings, create, summary="An ACME meter.")
"""


@pytest.fixture
def plugin_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution declaring a good driver and one that cannot load."""
    (tmp_path / "acme_meter.py").write_text(PLUGIN, encoding="utf-8")
    info = tmp_path / "acme_meter-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-meter\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nacme_meter = acme_meter:DRIVER\nbroken = acme_missing:DRIVER\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    drivers.cache_clear()
    yield
    drivers.cache_clear()


@pytest.mark.usefixtures("plugin_installed")
def test_a_driver_of_another_package_is_found_checked_and_documented(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert list(drivers()) == [
        "acme_meter",
        "adc",
        "framed",
        "gpio_input",
        "gpio_output",
        "modbus_rtu",
        "nmea",
        "onewire",
        "serial_line",
    ]
    assert "driver 'broken' (acme_missing:DRIVER) failed to load" in caplog.text
    device = {
        "id": "m1",
        "driver": "acme_meter",
        "registers": [{"sensor": "v"}, {"sensor": "i", "type": "float64"}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config({"devices": [device]}, None)
    assert [str(p) for p in info.value.problems] == [
        'devices[0].registers[1].type: must be one of "uint16", "float32" (got "float64") '
        '(did you mean "float32"?)'
    ]
    device["registers"] = [{"sensor": "v"}]
    (meter,) = parse_config({"devices": [device]}, None).devices
    assert type(meter).__name__ == "MeterSettings"
    assert "#### `[[devices.registers]]` of `acme_meter`" in devices_section()


def test_without_installed_drivers_a_device_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.config.drivers", dict)
    with pytest.raises(ConfigError) as info:
        parse_config({"devices": [{"id": "d1", "driver": "serial_line", "port": "/x"}]}, None)
    assert [str(p) for p in info.value.problems] == [
        "devices[0].driver: no driver is installed: drivers are found through the "
        "edge_gateway.drivers entry points of installed packages (install edge-gateway with "
        "pip, e.g. pip install -e .)"
    ]
