"""The ``nmea`` driver: a GPS receiver's serial port feeding the NMEA codec.

The port, its reconnects, read pacing and backpressure are those of every streaming
serial device (``SerialStreamDriver``, documented with ``serial_line``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from drivers.nmea.codec import NmeaDecoder
from drivers.nmea.settings import NmeaSettings
from drivers.serial_line.transport import SerialStreamDriver
from gateway.interfaces import SampleSink
from gateway.retry import Backoff


class NmeaDriver(SerialStreamDriver[NmeaDecoder]):
    """Reads an NMEA 0183 receiver on a serial port into a ``SampleSink``."""

    def __init__(
        self,
        settings: NmeaSettings,
        sink: SampleSink,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        codec = NmeaDecoder(
            settings.id,
            sentences=settings.sentences,
            units=settings.units,
            max_sentence_bytes=settings.max_sentence_bytes,
        )
        super().__init__(settings, sink, codec, backoff=backoff, clock=clock)
