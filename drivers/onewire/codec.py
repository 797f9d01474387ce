"""The ``onewire`` codec: what a 1-Wire temperature probe's sysfs files say, both ways.

Pure code, no I/O. The Linux w1 drivers publish each probe as a folder named by its
64-bit ROM id (``28-0316a2799bff``: family code, then the serial number) holding:

- ``temperature`` (kernels from 5.10): millidegrees Celsius, ``21437``;
- ``w1_slave``: the 9-byte scratchpad read twice, the kernel's CRC verdict on the
  first line and the temperature on the second::

      5b 01 4b 46 7f ff 05 10 b5 : crc=b5 YES
      5b 01 4b 46 7f ff 05 10 b5 t=21687

A ``NO`` verdict, an all-zero scratchpad (a probe that lost power or a shorted bus
reads as zeros, whose CRC is zero too, so the kernel says ``YES``), or text that does
not parse is refused with a reason; the transport keeps it as a dead letter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Family codes of the temperature probes the w1_therm kernel module reads: DS18S20,
# DS1822, DS18B20, MAX31850, DS28EA00 (and DS1825, which shares 0x3b).
FAMILIES = ("10", "22", "28", "3b", "42")
# A probe's folder: family code, "-", 12 hex digits of serial number, lower case.
PROBE_ID = re.compile(r"(?:" + "|".join(FAMILIES) + r")-[0-9a-f]{12}")

_CRC_LINE = re.compile(r"((?:[0-9a-f]{2} ){9}): crc=[0-9a-f]{2} (YES|NO)")
_TEMP_LINE = re.compile(r"(?:[0-9a-f]{2} ){9}t=(-?[0-9]+)")
_MILLIDEGREES = re.compile(r"-?[0-9]+")
_ZEROS = "00 " * 9

REASON_CRC = "crc check failed (crc=NO)"
REASON_ZEROS = "scratchpad all zeros (probe without power or bus shorted)"
REASON_UNPARSED = "not a temperature"


@dataclass(frozen=True, slots=True)
class Refused:
    """A file whose text is no temperature, and why."""

    reason: str


def decode(filename: str, text: str) -> float | Refused:
    """Degrees Celsius from the text of ``temperature`` or ``w1_slave``."""
    if filename == "temperature":
        stripped = text.strip()
        if not _MILLIDEGREES.fullmatch(stripped):
            return Refused(REASON_UNPARSED)
        return int(stripped) / 1000
    lines = text.splitlines()
    first = _CRC_LINE.fullmatch(lines[0].strip()) if lines else None
    if first is None:
        return Refused(REASON_UNPARSED)
    if first[2] == "NO":
        return Refused(REASON_CRC)
    if first[1] == _ZEROS:
        return Refused(REASON_ZEROS)
    second = _TEMP_LINE.fullmatch(lines[1].strip()) if len(lines) > 1 else None
    if second is None:
        return Refused(REASON_UNPARSED)
    return int(second[1]) / 1000


# The device side, for the simulator ------------------------------------------------


def crc8(data: bytes) -> int:
    """Dallas/Maxim CRC-8 (polynomial x^8 + x^5 + x^4 + 1, reflected), as the probe sends."""
    crc = 0
    for byte in data:
        for bit in range(8):
            mix = (crc ^ (byte >> bit)) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
    return crc


def encode_w1_slave(celsius: float, *, crc_ok: bool = True) -> str:
    """The ``w1_slave`` text of a DS18B20 at ``celsius`` (12-bit, 1/16 degree steps).

    ``crc_ok = False`` flips a bit of the scratchpad as a noisy bus would, so the CRC
    no longer matches and the kernel says ``NO``.
    """
    raw = round(celsius * 16)
    if not -55 * 16 <= raw <= 125 * 16:
        raise ValueError(f"a DS18B20 reads -55 to 125 degrees, not {celsius}")
    pad = bytearray(raw.to_bytes(2, "little", signed=True) + bytes([0x4B, 0x46, 0x7F, 0xFF]))
    pad += bytes([(16 - (raw & 0x0F)) or 0x10, 0x10])
    pad.append(crc8(bytes(pad)))
    if not crc_ok:
        pad[0] ^= 0x01
    shown = " ".join(f"{b:02x}" for b in pad)
    verdict = "YES" if crc8(bytes(pad[:8])) == pad[8] else "NO"
    # The kernel prints the value it computed from the bytes even when the CRC failed,
    # truncated toward zero as C divides.
    millis = _millidegrees(int.from_bytes(pad[:2], "little", signed=True))
    return f"{shown} : crc={pad[8]:02x} {verdict}\n{shown} t={millis}\n"


def encode_temperature(celsius: float) -> str:
    """The ``temperature`` text: millidegrees, as the kernel prints them."""
    return f"{_millidegrees(round(celsius * 16))}\n"


def _millidegrees(sixteenths: int) -> int:
    return int(sixteenths * 1000 / 16)
