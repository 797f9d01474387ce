"""The keys of an ``adc`` device: the chip, its SPI place, its reference, its channels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from drivers.framed.settings import finite_number
from drivers.gpio_input.settings import GPIO_ACCESS
from gateway.fields import (
    Given,
    Invalid,
    choice,
    duration,
    key,
    kind_of,
    sensor_name,
    string,
    tables,
    toml_value,
)
from gateway.settings import DeviceAccess, DeviceSettings, driver_tag

AdcChip = Literal[
    "MCP3001",
    "MCP3002",
    "MCP3004",
    "MCP3008",
    "MCP3201",
    "MCP3202",
    "MCP3204",
    "MCP3208",
    "MCP3301",
    "MCP3302",
    "MCP3304",
]
# Inputs per chip; the x001 chips have one differential input, read as channel 0.
CHANNELS: dict[str, int] = {
    "MCP3001": 1,
    "MCP3002": 2,
    "MCP3004": 4,
    "MCP3008": 8,
    "MCP3201": 1,
    "MCP3202": 2,
    "MCP3204": 4,
    "MCP3208": 8,
    "MCP3301": 1,
    "MCP3302": 4,
    "MCP3304": 8,
}
# gpiozero opens the SPI bus through the kernel's spidev nodes (/dev/spidevB.D, group
# spi) where it can, else it bit-bangs the bus's pins through the GPIO character devices.
SPI_ACCESS = DeviceAccess(
    classes=("char-spi", *GPIO_ACCESS.classes), groups=("spi", *GPIO_ACCESS.groups)
)


def channel_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"must be an integer from 0 to 7, not {kind_of(value)}")
    if not 0 <= value <= 7:
        raise Invalid(f"must be from 0 to 7 (got {toml_value(value)})")
    return value


def volts(value: object) -> float:
    result = finite_number(value)
    if result <= 0:
        raise Invalid(f"must be a voltage above 0 (got {toml_value(value)})")
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class AdcChannel:
    """One ``[[devices.channels]]`` table: an input of the chip and its reading."""

    channel: int = field(
        metadata=key(channel_number, "integer", "The chip's input, from 0 (CH0) upwards.")
    )
    sensor: str = field(metadata=key(sensor_name, "string", "The sensor name of its readings."))
    scale: float = field(
        default=1.0,
        metadata=key(
            finite_number,
            "number",
            "The reading is `volts * scale + offset`, volts being the input's voltage "
            "(0 to `vref`); the defaults give volts.",
        ),
    )
    offset: float = field(default=0.0, metadata=key(finite_number, "number", "See `scale`."))
    unit: str = field(
        default="V",
        metadata=key(string, "string", "Added to its readings as `unit` (`units` overrides it)."),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AdcSettings(DeviceSettings):
    driver: Literal["adc"] = driver_tag("adc")
    chip: AdcChip = field(
        default="MCP3008",
        metadata=key(
            choice(get_args(AdcChip)),
            "string",
            "The Microchip ADC, as gpiozero names it: 10-bit `MCP3001`/`3002`/`3004`/`3008`, "
            "12-bit `MCP3201`/`3202`/`3204`/`3208`, 13-bit `MCP3301`/`3302`/`3304`.",
        ),
    )
    spi_bus: int = field(
        default=0,
        metadata=key(
            choice((0, 1)),
            "integer",
            "The SPI bus: `0` (SPI0, header pins 19, 21, 23) or `1` (the auxiliary SPI1).",
        ),
    )
    spi_device: int = field(
        default=0,
        metadata=key(
            choice((0, 1, 2)),
            "integer",
            "The chip select: `0` for CE0 (BCM 8), `1` for CE1 (BCM 7); `2` on SPI1 only.",
        ),
    )
    vref: float = field(
        default=3.3,
        metadata=key(
            volts,
            "number",
            "The chip's reference voltage (its VREF pin), in volts: the input voltage of "
            "the highest code.",
        ),
    )
    poll_interval: float = field(
        default=1.0,
        metadata=key(
            duration(positive=True),
            "duration",
            "How often every channel is read (one reading per channel, all with one `ts`).",
        ),
    )
    channels: tuple[AdcChannel, ...] = field(
        metadata=tables(
            AdcChannel,
            "The inputs read, one `[[devices.channels]]` table each (or an inline array of "
            "tables); at least one.",
        ),
    )

    def device_access(self) -> DeviceAccess:
        return SPI_ACCESS

    def cross_check(self, keys: Given) -> Iterator[tuple[str, str]]:
        if not keys.ok("channels"):
            return
        if not self.channels:
            yield "channels", "must hold at least one channel ([[devices.channels]] table)"
            return
        if keys.ok("chip"):
            count = CHANNELS[self.chip]
            for i, channel in enumerate(self.channels):
                if channel.channel >= count:
                    top = f"0 to {count - 1}" if count > 1 else "0 only"
                    yield f"channels[{i}].channel", f"{self.chip} has channels {top}"
        for what in ("channel", "sensor"):
            values = [getattr(c, what) for c in self.channels]
            repeated = sorted({str(v) for v in values if values.count(v) > 1})
            if repeated:
                yield "channels", f"names {what} {', '.join(repeated)} more than once"
        if keys.ok("spi_bus", "spi_device") and self.spi_bus == 0 and self.spi_device == 2:
            yield "spi_device", "must be 0 or 1 on SPI bus 0 (it has two chip selects)"
