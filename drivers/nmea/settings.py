"""The keys of an ``nmea`` device: its port, and which sentences become readings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from drivers.nmea.codec import DEFAULT_MAX_SENTENCE_BYTES, SENTENCES
from drivers.serial_port import SerialPortSettings
from gateway.fields import Invalid, bounded_duration, key, one_of, size, strings
from gateway.settings import driver_tag


def sentence_types(value: object) -> tuple[str, ...]:
    names = strings(value)
    unknown = [n for n in names if n not in SENTENCES]
    if unknown:
        raise Invalid(f"{one_of(unknown)}: must each be one of {one_of(SENTENCES)}")
    if not names:
        raise Invalid("must name at least one sentence type")
    return names


@dataclass(frozen=True, slots=True, kw_only=True)
class NmeaSettings(SerialPortSettings):
    driver: Literal["nmea"] = driver_tag("nmea")
    sentences: tuple[str, ...] = field(
        default=SENTENCES,
        metadata=key(
            sentence_types,
            "array of strings",
            f"The sentence types read, of {', '.join(SENTENCES)} (all by default), from any "
            "talker (`GP`, `GN`, `GL`, `GA`, `BD`, …). A receiver reports the position in "
            'GGA, RMC and GLL alike: `["GGA", "VTG"]` sends each fix once. Other sentences '
            "(with a valid checksum) are skipped; a bad checksum is a dead letter whatever "
            "the type.",
        ),
    )
    max_sentence_bytes: int = field(
        default=DEFAULT_MAX_SENTENCE_BYTES,
        metadata=key(
            size(16),
            "size",
            "Longest accepted sentence (at least 16 bytes; the standard's limit is 82); a "
            "longer one becomes a dead letter and reading resumes at the next line.",
        ),
    )
    read_interval: float = field(
        default=0.018,
        metadata=key(
            bounded_duration(0.0, 1.0),
            "duration",
            "After a read that empties the port, the next read waits this long, so the "
            "burst of sentences a receiver writes for each fix is read in one go (one "
            'commit per fix, not per sentence). Works as for `serial_line`. Up to `"1s"`.',
        ),
    )
