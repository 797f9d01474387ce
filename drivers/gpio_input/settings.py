"""The keys of a ``gpio_input`` device: which pin, how it is wired, and what is reported."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from gateway.fields import (
    Given,
    Invalid,
    boolean,
    choice,
    duration,
    key,
    kind_of,
    sensor_name,
    toml_value,
)
from gateway.settings import DeviceAccess, DeviceSettings, driver_tag

GpioMode = Literal["level", "counter"]

# BCM numbers of the GPIO lines of a Raspberry Pi's SoC, and the pin names gpiozero
# reads ("GPIO17", "BCM17", "BOARD11", "WPI0", "J8:11"); the board's own pinout decides
# at open whether the pin exists.
MAX_BCM_PIN = 53
_PIN_NAME = re.compile(r"(?:GPIO|BCM|BOARD|WPI)[0-9]{1,2}|[A-Z][A-Z0-9]*:[0-9]{1,2}|[0-9]{1,2}")
PIN_RULE = (
    f"must be a BCM number from 0 to {MAX_BCM_PIN} or a pin name like "
    '"GPIO17", "BOARD11" or "J8:11"'
)

# gpiozero's default backend on Raspberry Pi OS, lgpio, opens the GPIO character devices
# (/dev/gpiochipN, group gpio); /dev/gpiomem is left out (only the RPi.GPIO and native
# backends use it). Every driver that claims GPIO lines through gpiozero needs this.
GPIO_ACCESS = DeviceAccess(classes=("char-gpiochip",), groups=("gpio",))


def gpio_pin(value: object) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_BCM_PIN:
            raise Invalid(f"must be a BCM number from 0 to {MAX_BCM_PIN} (got {value})")
        return value
    if not isinstance(value, str):
        raise Invalid(f"{PIN_RULE}, not {kind_of(value)}")
    if not _PIN_NAME.fullmatch(value):
        raise Invalid(f"{PIN_RULE} (got {toml_value(value)})")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class GpioInputSettings(DeviceSettings):
    driver: Literal["gpio_input"] = driver_tag("gpio_input")
    # A BCM number (17) or a gpiozero pin name ("GPIO17", "BOARD11"), as gpiozero takes
    # it, so the names in its pinout tables work unchanged.
    pin: int | str = field(
        metadata=key(
            gpio_pin,
            "integer or string",
            'The BCM GPIO number (`17`, 0 to 53), or a pin name as gpiozero reads it: `"GPIO17"`, '
            '`"BCM17"`, `"BOARD11"` (the physical pin of the 40-pin header), `"WPI0"`, '
            '`"J8:11"`. Names are case sensitive. Whether the pin exists on this board is '
            "checked when it is opened.",
        )
    )
    # Pull the pin up so a contact or open collector to ground reads as active; most
    # door contacts, relays and meter outputs are wired that way.
    pull_up: bool = field(
        default=True,
        metadata=key(
            boolean,
            "boolean",
            "`true`: the internal pull-up is on and the input is **active when pulled low**, "
            "the usual wiring of a contact, relay or open-collector output to ground (GND). "
            "`false`: the pull-down is on and the input is active when driven high (3.3 V; "
            "never 5 V).",
        ),
    )
    # A level must hold this long before it counts, so contact bounce and electrical
    # spikes never become readings or pulses.
    bounce: float = field(
        default=0.01,
        metadata=key(
            duration(positive=False),
            "duration",
            "How long the input must hold a new level before the change counts. Contact "
            "bounce and spikes shorter than this never become readings or pulses. Pulses "
            "shorter than `bounce` are not counted: for a pulse output faster than "
            '1/(2 × `bounce`) Hz (50 Hz at the default), lower it (`"1ms"`) or set `0` '  # noqa: RUF001
            "(every edge counts; for clean electronic outputs only).",
        ),
    )
    # "level" reports every change of state; "counter" counts pulses.
    mode: GpioMode = field(
        default="level",
        metadata=key(
            choice(get_args(GpioMode)),
            "string",
            '`"level"`: a reading of the state (`1` active, `0` not) at every change, at open, '
            'and every `sample_interval`. `"counter"`: pulses (activations) are counted; every '
            "`sample_interval` a reading of the total count and one of the rate in pulses per "
            "second.",
        ),
    )
    # level: a reading of the state this often even without a change, so a silent input
    # is told apart from a dead one (0 = changes only); counter: how often the count and
    # rate are reported.
    sample_interval: float = field(
        default=60.0,
        metadata=key(
            duration(positive=False),
            "duration",
            '`"level"`: the heartbeat, a reading of the state even when it does not change, so '
            "a quiet input is told apart from a dead gateway; `0` turns it off (changes only). "
            '`"counter"`: how often count and rate are reported; must be above 0. Setting '
            "`expected_interval` to it lets the health check notice a stalled device.",
        ),
    )
    # The sensor name of the state (level) or of the count (counter, whose rate is then
    # "<sensor>_rate"); unset: "state", or "count" and "rate".
    sensor: str = field(
        default="",
        metadata=key(
            sensor_name,
            "string",
            'The sensor name of the readings. Unset: `state` (`"level"`), or `count` and `rate` '
            '(`"counter"`). Set, e.g. `"water"`: `water` for the state or the count, and '
            '`water_rate` for the rate. `units` uses these names: `units = { water = "pulses", '
            'water_rate = "1/s" }`.',
        ),
    )

    def device_access(self) -> DeviceAccess:
        return GPIO_ACCESS

    def cross_check(self, keys: Given) -> Iterator[tuple[str, str]]:
        counts = self.mode == "counter" and keys.ok("mode", "sample_interval")
        if counts and self.sample_interval <= 0:
            yield "sample_interval", 'must be longer than 0 seconds with mode = "counter"'
