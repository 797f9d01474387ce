"""The sans-io codec of NMEA 0183 receivers: bytes in, samples and dead letters out.

A receiver writes one sentence per line, ``$GPGGA,…*hh\\r\\n``: a talker id (``GP``,
``GN``, ``GL``, ``GA``, ``BD``, … any two letters), a sentence type, comma-separated
fields and a checksum (the XOR of every byte between ``$`` and ``*``, two hex digits).
``NmeaDecoder`` is fed whatever chunk the port returned, in any split, and keeps only
the unfinished tail of the last line, never more than ``max_sentence_bytes``. Every
line either becomes samples, is skipped (a blank line, a sentence type nobody reads),
or becomes one dead letter with its raw bytes: a sentence is never half accepted.

Sentences are parsed here rather than with pynmea2: the few fields read are fixed by
the standard, and our own parser gives each refusal a reason of its own (a bad checksum
is not a bad field) without a dependency on the device.

The encoder side (``encode_sentence`` and the ``Fix`` sentences) is what the simulated
receiver writes, so the simulator and the gateway agree by construction.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from drivers.delimited import Splitter
from drivers.serial_line.codec import Decoded
from gateway.errors import DriverError
from gateway.reading import DeadLetter, Sample, Value

# Sentence types read; others (with a valid checksum) are skipped.
SENTENCES = ("GGA", "RMC", "GLL", "VTG", "GSA", "GSV", "ZDA")
# The standard caps a sentence at 82 characters; receivers' proprietary ones run longer.
DEFAULT_MAX_SENTENCE_BYTES = 256

REASON_CHECKSUM = "bad checksum"
REASON_NO_CHECKSUM = "missing checksum"
REASON_NOT_SENTENCE = "not an NMEA sentence"
REASON_TOO_LONG = "sentence too long"
REASON_ASCII = "not ASCII"
REASON_DISCONNECT = "incomplete sentence at disconnect"

# The unit of each reading the codec gives; a device's `units` key overrides them.
UNITS: Mapping[str, str] = {
    "lat": "°",
    "lon": "°",
    "altitude": "m",
    "geoid_separation": "m",
    "speed": "m/s",
    "course": "°",
    "utc": "s",
}

_KNOT = 1852 / 3600  # m/s
_KMH = 1 / 3.6  # m/s
_NL = b"\n"
_CR = b"\r"
_HEX = frozenset("0123456789ABCDEFabcdef")


class _Malformed(ValueError):
    """A field that does not hold what the sentence type says it holds."""


def checksum(body: bytes) -> int:
    """The XOR of every byte of ``body`` (what lies between ``$`` and ``*``)."""
    result = 0
    for byte in body:
        result ^= byte
    return result


def encode_sentence(address: str, fields: Sequence[str]) -> bytes:
    """``$ADDRESS,f1,f2,…*hh\\r\\n``, the checksum computed."""
    body = ",".join([address, *fields]).encode("ascii")
    if any(c in body for c in b"$!*\r\n"):
        raise ValueError(f"an NMEA field cannot hold $ ! * or a line end: {body!r}")
    return b"$%s*%02X\r\n" % (body, checksum(body))


def _coordinate(value: float, width: int, signs: str) -> tuple[str, str]:
    """Decimal degrees as NMEA's ``dddmm.mmmmm`` and its hemisphere letter."""
    hemisphere = signs[0] if value >= 0 else signs[1]
    magnitude = abs(value)
    minutes_total = round(magnitude * 60, 5)
    degrees, minutes = divmod(minutes_total, 60)
    return f"{int(degrees):0{width}d}{minutes:08.5f}", hemisphere


def _hhmmss(utc: float) -> str:
    seconds_of_day = round(utc, 2) % 86400
    hours, rest = divmod(seconds_of_day, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{int(hours):02d}{int(minutes):02d}{seconds:05.2f}"


def _ddmmyy(utc: float) -> str:
    year, month, day = _date(utc)
    return f"{day:02d}{month:02d}{year % 100:02d}"


def _date(utc: float) -> tuple[int, int, int]:
    tm = time.gmtime(math.floor(round(utc, 2)))
    return tm.tm_year, tm.tm_mon, tm.tm_mday


@dataclass(frozen=True, slots=True)
class Fix:
    """One position fix, as a receiver reports it in its sentences."""

    utc: float  # epoch seconds, to the hundredth
    lat: float
    lon: float
    altitude: float = 0.0
    speed: float = 0.0  # m/s
    course: float = 0.0  # degrees true
    quality: int = 1  # GGA fix quality: 0 none, 1 GPS, 2 DGPS, 4 RTK …
    satellites: int = 8
    hdop: float = 0.9
    talker: str = "GP"

    def gga(self) -> bytes:
        lat, ns = _coordinate(self.lat, 2, "NS")
        lon, ew = _coordinate(self.lon, 3, "EW")
        fields = [_hhmmss(self.utc), lat, ns, lon, ew, str(self.quality)]
        fields += [f"{self.satellites:02d}", f"{self.hdop:.1f}", f"{self.altitude:.1f}", "M"]
        fields += ["47.0", "M", "", ""]
        return encode_sentence(self.talker + "GGA", fields)

    def rmc(self) -> bytes:
        lat, ns = _coordinate(self.lat, 2, "NS")
        lon, ew = _coordinate(self.lon, 3, "EW")
        status = "A" if self.quality else "V"
        fields = [_hhmmss(self.utc), status, lat, ns, lon, ew]
        fields += [f"{self.speed / _KNOT:.3f}", f"{self.course:.2f}", _ddmmyy(self.utc)]
        fields += ["", "", "A" if self.quality else "N"]
        return encode_sentence(self.talker + "RMC", fields)

    def vtg(self) -> bytes:
        knots, kmh = self.speed / _KNOT, self.speed / _KMH
        fields = [f"{self.course:.2f}", "T", "", "M", f"{knots:.3f}", "N", f"{kmh:.3f}", "K"]
        return encode_sentence(self.talker + "VTG", [*fields, "A" if self.quality else "N"])

    def gsa(self) -> bytes:
        prns = [f"{n:02d}" for n in range(1, self.satellites + 1)][:12]
        prns += [""] * (12 - len(prns))
        dops = [f"{self.hdop * 1.8:.1f}", f"{self.hdop:.1f}", f"{self.hdop * 1.4:.1f}"]
        return encode_sentence(
            self.talker + "GSA", ["A", "3" if self.quality else "1", *prns, *dops]
        )

    def gsv(self) -> list[bytes]:
        """The satellites in view, four per sentence."""
        sats = [(n, 10 + 5 * n % 80, (37 * n) % 360, 20 + n % 30) for n in range(1, 11)]
        groups = [sats[i : i + 4] for i in range(0, len(sats), 4)]
        out = []
        for index, group in enumerate(groups, 1):
            fields = [str(len(groups)), str(index), f"{len(sats):02d}"]
            for prn, elevation, azimuth, snr in group:
                fields += [f"{prn:02d}", f"{elevation:02d}", f"{azimuth:03d}", f"{snr:02d}"]
            out.append(encode_sentence(self.talker + "GSV", fields))
        return out

    def sentences(self) -> list[bytes]:
        """What a receiver writes for one fix, in the usual order."""
        return [self.gga(), self.rmc(), self.vtg(), self.gsa(), *self.gsv()]


# Decoding ----------------------------------------------------------------------


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Malformed from None
    if not math.isfinite(value) or "_" in text:
        raise _Malformed
    return value


def _int(text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise _Malformed
    return int(text)


def _latlon(value: str, hemisphere: str, degree_digits: int, signs: str, limit: float) -> float:
    """``ddmm.mmmm`` (``dddmm.mmmm`` for longitude) and its hemisphere, as signed degrees."""
    if len(value) < degree_digits + 2 or not value[:degree_digits].isdigit():
        raise _Malformed
    degrees = int(value[:degree_digits])
    minutes = _float(value[degree_digits:])
    if hemisphere not in signs or not 0 <= minutes < 60:
        raise _Malformed
    result = degrees + minutes / 60
    if result > limit:
        raise _Malformed
    return -result if hemisphere == signs[1] else result


def _time_of_day(text: str) -> float:
    """``hhmmss.ss`` as seconds since midnight."""
    if len(text) < 6 or not text[:6].isdigit():
        raise _Malformed
    hours, minutes = int(text[:2]), int(text[2:4])
    seconds = _float(text[4:])
    if hours > 23 or minutes > 59 or not 0 <= seconds < 61:
        raise _Malformed
    return hours * 3600 + minutes * 60 + seconds


def _epoch(year: int, month: int, day: int, seconds_of_day: float) -> float:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise _Malformed
    try:
        midnight = calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0))
    except (ValueError, OverflowError):
        raise _Malformed from None
    return round(midnight + seconds_of_day, 3)


def _field(fields: Sequence[str], index: int) -> str:
    return fields[index] if index < len(fields) else ""


Readings = list[tuple[str, Value]]


def _gga(fields: Sequence[str], talker: str) -> Readings:
    if len(fields) < 9:
        raise _Malformed
    out: Readings = []
    quality_text = _field(fields, 5)
    quality = _int(quality_text) if quality_text else 0
    if quality_text:
        out.append(("fix_quality", quality))
    if quality and any(fields[1:5]):
        out += _position(fields, 1)
    for name, index, convert in (
        ("satellites", 6, _int),
        ("hdop", 7, _float),
        ("altitude", 8, _float),
        ("geoid_separation", 10, _float),
    ):
        text = _field(fields, index)
        if text and (quality or name == "satellites"):
            out.append((name, convert(text)))
    return out


def _position(fields: Sequence[str], at: int) -> Readings:
    if len(fields) < at + 4:
        raise _Malformed
    lat = _latlon(fields[at], fields[at + 1], 2, "NS", 90)
    lon = _latlon(fields[at + 2], fields[at + 3], 3, "EW", 180)
    return [("lat", lat), ("lon", lon)]


def _rmc(fields: Sequence[str], talker: str) -> Readings:
    if len(fields) < 9:
        raise _Malformed
    status = fields[1]
    if status not in ("A", "V"):
        raise _Malformed
    # The mode (NMEA 2.3 and later) says "N" for no fix even where status is "A".
    valid = status == "A" and _field(fields, 11)[:1] != "N"
    out: Readings = []
    if fields[0] and fields[8]:
        date = fields[8]
        if len(date) != 6 or not date.isdigit():
            raise _Malformed
        day, month, yy = int(date[:2]), int(date[2:4]), int(date[4:])
        # Two-digit years: the convention of receivers and pynmea2 alike.
        year = 1900 + yy if yy >= 80 else 2000 + yy
        out.append(("utc", _epoch(year, month, day, _time_of_day(fields[0]))))
    if not valid:
        return out
    out += _position(fields, 2)
    if fields[6]:
        out.append(("speed", round(_float(fields[6]) * _KNOT, 4)))
    if fields[7]:
        out.append(("course", _float(fields[7])))
    return out


def _gll(fields: Sequence[str], talker: str) -> Readings:
    if len(fields) < 6:
        raise _Malformed
    if fields[5] != "A" or _field(fields, 6)[:1] == "N":
        return []
    return _position(fields, 0)


def _vtg(fields: Sequence[str], talker: str) -> Readings:
    if len(fields) < 8:
        raise _Malformed
    if _field(fields, 8)[:1] == "N":
        return []
    out: Readings = []
    if fields[0]:
        out.append(("course", _float(fields[0])))
    if fields[6]:
        out.append(("speed", round(_float(fields[6]) * _KMH, 4)))
    elif fields[4]:
        out.append(("speed", round(_float(fields[4]) * _KNOT, 4)))
    return out


def _gsa(fields: Sequence[str], talker: str) -> Readings:
    if len(fields) < 17:
        raise _Malformed
    mode = _int(fields[1]) if fields[1] else 1
    if mode not in (1, 2, 3):
        raise _Malformed
    out: Readings = [("fix_mode", mode)]
    if mode == 1:
        return out
    for name, index in (("pdop", 14), ("hdop", 15), ("vdop", 16)):
        if fields[index]:
            out.append((name, _float(fields[index])))
    return out


def _gsv(fields: Sequence[str], talker: str) -> Readings:
    if len(fields) < 3:
        raise _Malformed
    total, index = _int(fields[0]), _int(fields[1])
    if not 1 <= index <= total:
        raise _Malformed
    # Each constellation's receiver reports its own satellites; the first sentence of a
    # group is enough for the count.
    if index != 1 or not fields[2]:
        return []
    return [(f"satellites_in_view.{talker}", _int(fields[2]))]


def _zda(fields: Sequence[str], talker: str) -> Readings:
    if len(fields) < 4:
        raise _Malformed
    if not (fields[0] and fields[1] and fields[2] and fields[3]):
        return []
    year = _int(fields[3])
    return [("utc", _epoch(year, _int(fields[2]), _int(fields[1]), _time_of_day(fields[0])))]


_PARSERS: Mapping[str, Callable[[Sequence[str], str], Readings]] = {
    "GGA": _gga,
    "RMC": _rmc,
    "GLL": _gll,
    "VTG": _vtg,
    "GSA": _gsa,
    "GSV": _gsv,
    "ZDA": _zda,
}


class NmeaDecoder:
    """Turns a receiver's byte stream into samples and dead letters, with a bounded buffer."""

    def __init__(
        self,
        device: str,
        *,
        sentences: Collection[str] = SENTENCES,
        units: Mapping[str, str] | None = None,
        max_sentence_bytes: int = DEFAULT_MAX_SENTENCE_BYTES,
    ) -> None:
        if max_sentence_bytes < 16:
            raise DriverError(device, "max_sentence_bytes must be at least 16")
        unknown = set(sentences) - set(SENTENCES)
        if unknown:
            raise DriverError(device, f"unknown sentence types {sorted(unknown)}")
        self.device = device
        self.sentences = frozenset(sentences)
        self.units = {**UNITS, **(units or {})}
        self.max_sentence_bytes = max_sentence_bytes
        # Valid sentences that gave no readings: types not read, or proprietary ones.
        self.skipped = 0
        self._lines = Splitter(_NL, max_sentence_bytes)

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished sentence held between feeds (at most max_sentence_bytes)."""
        return self._lines.buffered

    def feed(self, data: bytes, ts: float) -> Decoded:
        """Decode a chunk read at time ``ts``; sentences it completes get that timestamp."""
        out = Decoded()
        # \r, \n and \r\n all end a line; \r\n then yields an empty line, which is skipped.
        for line in self._lines.feed(data.replace(_CR, _NL)):
            if line.complete:
                self._decode(line.data, ts, out)
            else:
                out.dead_letters.append(self._dead(REASON_TOO_LONG, line.data, ts))
        return out

    def reset(self, ts: float) -> DeadLetter | None:
        """Forget the unfinished sentence (the port closed); returned as a dead letter."""
        tail = self._lines.reset()
        return self._dead(REASON_DISCONNECT, tail, ts) if tail else None

    def _dead(self, reason: str, raw: bytes, ts: float) -> DeadLetter:
        return DeadLetter(device=self.device, reason=reason, raw=raw, ts=ts)

    def _decode(self, line: bytes, ts: float, out: Decoded) -> None:
        if line.isspace():
            return
        if not line.isascii():
            out.dead_letters.append(self._dead(REASON_ASCII, line, ts))
            return
        text = line.decode("ascii").strip(" \t")
        if text[:1] not in ("$", "!"):
            out.dead_letters.append(self._dead(REASON_NOT_SENTENCE, line, ts))
            return
        star = text.rfind("*")
        if star < 0:
            out.dead_letters.append(self._dead(REASON_NO_CHECKSUM, line, ts))
            return
        given = text[star + 1 :]
        body = text[1:star]
        if (
            len(given) != 2
            or not _HEX.issuperset(given)
            or int(given, 16) != checksum(body.encode("ascii"))
        ):
            out.dead_letters.append(self._dead(REASON_CHECKSUM, line, ts))
            return
        address, _, rest = body.partition(",")
        kind = address[2:]
        parse = _PARSERS.get(kind)
        # Proprietary sentences ($P…) carry a maker's id, not a talker.
        if address[:1] == "P" or len(address) != 5 or parse is None or kind not in self.sentences:
            self.skipped += 1
            return
        try:
            readings = parse(rest.split(","), address[:2])
        except _Malformed:
            out.dead_letters.append(self._dead(f"malformed {kind} sentence", line, ts))
            return
        if not readings:
            self.skipped += 1
            return
        device, units = self.device, self.units
        out.samples.extend(
            Sample(device, name, value, ts, units.get(name)) for name, value in readings
        )
