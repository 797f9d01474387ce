"""The keys of a serial port, shared by every driver that reads one.

A driver on a serial port extends ``SerialPortSettings``; a Modbus RTU bus or an NMEA
receiver takes the same ``port``, ``baudrate``, ``bytesize``, ``parity`` and
``stopbits`` as a line-oriented device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from gateway.fields import choice, key, text
from gateway.settings import DeviceSettings

# Standard serial speeds that USB adapters and UARTs on small boards support.
BAUDRATES = (300, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)

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
        metadata=key(choice(BAUDRATES), "integer", f"One of {', '.join(map(str, BAUDRATES))}."),
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
