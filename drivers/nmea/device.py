"""A simulated GPS receiver: a moving track, written with the NMEA codec's encoder."""

from __future__ import annotations

import math
import random
import time

from drivers.nmea.codec import Fix

# Metres per degree of latitude (and of longitude at the equator).
_METRES_PER_DEGREE = 111_320.0


class GpsSource:
    """A receiver driving a circle (about 1 km round) near a start point, one fix per call.

    Each ``line()`` is the sentences of one fix (GGA, RMC, VTG, GSA, GSV), one second
    after the previous one; the receiver's clock starts at the simulator's start.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        lat: float = 48.1173,
        lon: float = 11.5167,
        talker: str = "GP",
        start: float | None = None,
    ) -> None:
        self._rng = rng
        self._centre = (lat, lon)
        self._talker = talker
        self._utc = round(time.time() if start is None else start, 2)
        self._angle = 0.0
        self.last: Fix | None = None

    def fix(self) -> Fix:
        """The next fix: 1 s further along the circle."""
        speed = 10.0 + self._rng.uniform(-0.5, 0.5)  # m/s
        radius = 160.0  # m
        self._angle = (self._angle + speed / radius) % (2 * math.pi)
        lat0, lon0 = self._centre
        north = radius * math.sin(self._angle)
        east = radius * math.cos(self._angle)
        lat = lat0 + north / _METRES_PER_DEGREE
        lon = lon0 + east / (_METRES_PER_DEGREE * math.cos(math.radians(lat0)))
        # Moving counter-clockwise: the heading is the tangent, in degrees from north.
        course = (
            math.degrees(math.atan2(-math.sin(self._angle), math.cos(self._angle))) + 360
        ) % 360
        self._utc = round(self._utc + 1.0, 2)
        fix = Fix(
            utc=self._utc,
            lat=lat,
            lon=lon,
            altitude=round(520.0 + self._rng.uniform(-2, 2), 1),
            speed=round(speed, 3),
            course=round(course, 2),
            satellites=self._rng.randint(6, 12),
            hdop=round(self._rng.uniform(0.6, 1.6), 1),
            talker=self._talker,
        )
        self.last = fix
        return fix

    def line(self) -> bytes:
        return b"".join(self.fix().sentences())

    def garbage(self) -> bytes:
        """The last fix's GGA again, with a wrong checksum (as if a bit flipped in transit)."""
        good = (self.last or self.fix()).gga()
        star = good.rindex(b"*")
        wrong = int(good[star + 1 : star + 3], 16) ^ 0x5A
        return b"%s*%02X\r\n" % (good[:star], wrong)
