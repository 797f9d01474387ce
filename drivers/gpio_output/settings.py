"""The keys of a ``gpio_output`` device: which pin, how it drives, and its state at start."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from drivers.gpio_input.settings import GPIO_ACCESS, gpio_pin
from gateway.fields import Given, Invalid, boolean, key, kind_of, sensor_name, toml_value
from gateway.settings import DeviceAccess, DeviceSettings, driver_tag

DEFAULT_FREQUENCY = 100.0
LEVEL_RULE = "must be a number from 0 to 1, or true or false"


def output_level(value: object) -> float:
    """An output's level: ``true``/``false``, ``0``/``1``, or a PWM duty cycle in between."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise Invalid(f"{LEVEL_RULE}, not {kind_of(value)}")
    if not 0 <= value <= 1:
        raise Invalid(f"{LEVEL_RULE} (got {toml_value(value)})")
    return float(value)


def frequency(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise Invalid(f"must be a number of hertz above 0 (got {toml_value(value)})")
    if not math.isfinite(value) or value > 100_000:
        raise Invalid(f"must be at most 100000 Hz (got {toml_value(value)})")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class GpioOutputSettings(DeviceSettings):
    driver: Literal["gpio_output"] = driver_tag("gpio_output")
    pin: int | str = field(
        metadata=key(
            gpio_pin,
            "integer or string",
            'The BCM GPIO number (`18`) or a pin name as gpiozero reads it (`"GPIO18"`, '
            '`"BOARD12"`), as for `gpio_input`.',
        )
    )
    pwm: bool = field(
        default=False,
        metadata=key(
            boolean,
            "boolean",
            "`false`: a digital output, on (`1`) or off (`0`), through gpiozero's "
            "`DigitalOutputDevice`. `true`: pulse-width modulation through "
            "`PWMOutputDevice`; its level is the duty cycle from `0` to `1`.",
        ),
    )
    frequency: float = field(
        default=DEFAULT_FREQUENCY,
        metadata=key(
            frequency,
            "number",
            "PWM frequency in hertz (`pwm = true` only). lgpio times PWM in software: keep "
            "it in the hundreds of hertz for a steady signal.",
        ),
    )
    active_high: bool = field(
        default=True,
        metadata=key(
            boolean,
            "boolean",
            "`true`: on (`1`) drives the pin high (3.3 V). `false`: on drives it low, for a "
            "relay board whose inputs are active low.",
        ),
    )
    # The state at open, and the safe state the output returns to at every stop.
    initial: float = field(
        default=0.0,
        metadata=key(
            output_level,
            "number or boolean",
            "The level set when the pin opens, and the safe level it is set to when the "
            "device stops (before the pin is released): `0` or `1` (`false`/`true`), or a "
            "duty cycle from `0` to `1` with `pwm = true`.",
        ),
    )
    sensor: str = field(
        default="",
        metadata=key(
            sensor_name,
            "string",
            "The sensor name of the output's readings, and the name a write must give. "
            "Unset: `state`.",
        ),
    )

    def device_access(self) -> DeviceAccess:
        return GPIO_ACCESS

    def cross_check(self, keys: Given) -> Iterator[tuple[str, str]]:
        digital = not self.pwm and keys.ok("pwm", "initial")
        if digital and self.initial not in (0.0, 1.0):
            yield "initial", "must be 0 or 1 (or false or true) without pwm = true"

    def warnings(self) -> Iterator[tuple[str, str]]:
        if not self.pwm and self.frequency != DEFAULT_FREQUENCY:
            yield "frequency", "is used only with pwm = true"
