"""The ``framed`` driver: a serial port feeding the frame codec.

The port, its reconnects, read pacing and backpressure are those of every streaming
serial device (``SerialStreamDriver``, documented with ``serial_line``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from drivers.framed.codec import FrameDecoder
from drivers.framed.settings import FramedSettings
from drivers.serial_line.transport import SerialStreamDriver
from gateway.interfaces import SampleSink
from gateway.retry import Backoff


class FramedDriver(SerialStreamDriver[FrameDecoder]):
    """Reads a device sending binary frames on a serial port into a ``SampleSink``."""

    def __init__(
        self,
        settings: FramedSettings,
        sink: SampleSink,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        codec = FrameDecoder(
            settings.id,
            settings.codec(),
            units=settings.units,
            max_frame_bytes=settings.max_frame_bytes,
        )
        super().__init__(settings, sink, codec, backoff=backoff, clock=clock)
