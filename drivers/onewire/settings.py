"""The keys of a ``onewire`` device: where the w1 tree is, how often, and probe names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from drivers.onewire.codec import FAMILIES, PROBE_ID
from gateway.fields import Invalid, duration, key, kind_of, sensor_name, text, toml_value
from gateway.settings import DeviceSettings, driver_tag

W1_DEVICES = "/sys/bus/w1/devices"


def probe_names(value: object) -> dict[str, str]:
    """``{ "28-0316a2799bff" = "boiler" }``: probe ids checked, names checked and unique."""
    if not isinstance(value, dict):
        raise Invalid(f"must be a table of probe id = sensor name, not {kind_of(value)}")
    names: dict[str, str] = {}
    for probe, name in value.items():
        if not PROBE_ID.fullmatch(probe):
            raise Invalid(
                f"{toml_value(probe)} is not a 1-Wire temperature probe id: family "
                f'{", ".join(FAMILIES)}, then "-" and 12 lower-case hex digits '
                '("28-0316a2799bff")'
            )
        try:
            names[probe] = sensor_name(name)
        except Invalid as exc:
            raise Invalid(f"{toml_value(probe)}: {exc}") from None
    taken = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if taken:
        raise Invalid(f"gives the name {toml_value(taken[0])} to more than one probe")
    return names


@dataclass(frozen=True, slots=True, kw_only=True)
class OneWireSettings(DeviceSettings):
    driver: Literal["onewire"] = driver_tag("onewire")
    # A folder, not a device node: the kernel's w1 bus master publishes the probes there.
    base_path: str = field(
        default=W1_DEVICES,
        metadata=key(
            text,
            "string",
            "The folder of the kernel's 1-Wire devices, one sub-folder per probe. Set it "
            "only to read a copy of that tree (a test, or a probe tree mounted elsewhere).",
        ),
    )
    poll_interval: float = field(
        default=10.0,
        metadata=key(
            duration(positive=True),
            "duration",
            "How often every probe is read. A DS18B20 takes up to 750 ms to convert at "
            "12 bits, and probes are read one after the other: keep it above 0.75 s per "
            "probe on the bus.",
        ),
    )
    names: dict[str, str] = field(
        default_factory=dict,
        metadata=key(
            probe_names,
            "table of strings",
            'Sensor name per probe id: `{ "28-0316a2799bff" = "boiler" }`. A probe not '
            "named here reports under its id.",
        ),
    )
