"""The keys of a serial port, shared by every driver that reads one.

A driver on a serial port extends ``SerialPortSettings``; a Modbus RTU bus or an NMEA
receiver takes the same ``port``, ``baudrate``, ``bytesize``, ``parity`` and
``stopbits`` as a line-oriented device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from gateway.fields import Invalid, choice, key, one_of, text, toml_value
from gateway.settings import DeviceAccess, DeviceSettings

# Standard serial speeds that USB adapters and UARTs on small boards support.
BAUDRATES = (300, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
# Other rates are set as the port allows (Linux's BOTHER): 74,880 for an ESP8266's boot
# log, 250,000 for 3D printers, 1,000,000 and more on USB adapters. The bounds only
# catch what no UART does.
MIN_BAUDRATE = 50
MAX_BAUDRATE = 12_000_000
BAUDRATE_RULE = (
    f"must be one of {one_of(BAUDRATES)}, or another whole number of bits per second from "
    f"{MIN_BAUDRATE} to {MAX_BAUDRATE}"
)


def baudrate(value: object) -> int:
    # A float is refused even when whole: 9600.0 is a typo or a unit mix-up, not a rate.
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not isinstance(value, int) or not whole or not MIN_BAUDRATE <= value <= MAX_BAUDRATE:
        raise Invalid(f"{BAUDRATE_RULE} (got {toml_value(value)})")
    return value


Parity = Literal["N", "E", "O", "M", "S"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialPortSettings(DeviceSettings):
    port: str = field(
        metadata=key(
            text,
            "string",
            "The serial port. Prefer the stable `/dev/serial/by-id/…` name over "
            "`/dev/ttyUSB0`, which can change between boots. The port need not exist when "
            "the gateway starts: it is opened, and reopened, when it appears. Used as "
            "written (not a path of this file: a relative name is not resolved).",
        )
    )
    baudrate: int = field(
        default=9600,
        metadata=key(
            baudrate,
            "integer",
            f"Bits per second: a standard rate ({', '.join(map(str, BAUDRATES))}), or any "
            f"other from {MIN_BAUDRATE} to {MAX_BAUDRATE:,} that the port supports (74,880 for "
            "an ESP8266's boot log, 250,000 for a 3D printer, 1,000,000 on a USB adapter). "
            "`check-config` warns about a non-standard rate; a port that refuses it fails to "
            "open, and the gateway keeps retrying and says why.",
        ),
    )
    bytesize: int = field(
        default=8, metadata=key(choice((5, 6, 7, 8)), "integer", "Data bits: 5, 6, 7 or 8.")
    )
    parity: Parity = field(
        default="N",
        metadata=key(
            choice(get_args(Parity)),
            "string",
            '`"N"` none, `"E"` even, `"O"` odd, `"M"` mark, `"S"` space.',
        ),
    )
    stopbits: float = field(default=1, metadata=key(choice((1, 1.5, 2)), "number", "1, 1.5 or 2."))

    def warnings(self) -> Iterator[tuple[str, str]]:
        if self.baudrate not in BAUDRATES:
            yield (
                "baudrate",
                f"{self.baudrate} is not a standard rate; the port and its adapter must "
                "support it (many USB adapters do, a Raspberry Pi's mini UART may not)",
            )

    def device_access(self) -> DeviceAccess:
        return DeviceAccess(nodes=(self.port,))
