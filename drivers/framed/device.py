"""A simulated microcontroller sending binary frames, written with the frame codec."""

from __future__ import annotations

import random

from drivers.framed.codec import FieldSpec, FrameCodec

# What the simulated device sends: read it with these [[devices.fields]] (the defaults
# of framing, crc and byte_order).
SIM_FIELDS = (
    FieldSpec("n", "uint32"),
    FieldSpec("t", "int16", scale=0.01, unit="°C"),
    FieldSpec("v", "uint16", scale=0.001, unit="V"),
    FieldSpec("ok", "bool"),
)
SIM_FIELDS_TOML = """\
[[devices.fields]]
name = "n"
type = "uint32"

[[devices.fields]]
name = "t"
type = "int16"
scale = 0.01
unit = "°C"

[[devices.fields]]
name = "v"
type = "uint16"
scale = 0.001
unit = "V"

[[devices.fields]]
name = "ok"
type = "bool"
"""


class FramedSource:
    """A counter ``n`` (1, 2, 3, …), a drifting temperature and voltage, one frame per call."""

    def __init__(self, rng: random.Random, start: int = 1, codec: FrameCodec | None = None) -> None:
        self.codec = codec or FrameCodec(SIM_FIELDS)
        self._rng = rng
        self._n = start
        self._t = 2150  # hundredths of a degree
        self._v = 3300  # millivolts
        self._last = (0, self._t, self._v, True)

    def raw(self) -> tuple[int, int, int, bool]:
        """The next frame's raw field values."""
        n = self._n
        self._n = n + 1
        self._t = min(8500, max(-4000, self._t + self._rng.randint(-5, 5)))
        self._v = min(3600, max(3000, self._v + self._rng.randint(-3, 3)))
        self._last = (n, self._t, self._v, self._v > 3100)
        return self._last

    def line(self) -> bytes:
        return self.codec.encode(self.raw())

    def garbage(self) -> bytes:
        """Line noise ending in a delimiter, then the last frame again with a wrong CRC."""
        codec = self.codec
        noise = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(1, 20)))
        noise = noise.replace(codec.delimiter, b"\x55")
        body = codec.struct.pack(*self._last)
        wrong = codec.crc(body) ^ 1
        return (
            noise + codec.delimiter + codec.frame(body + wrong.to_bytes(codec.crc_size, "little"))
        )
