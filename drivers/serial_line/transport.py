"""The ``serial_line`` driver: a serial port feeding the line codec, reopened when it fails.

``SerialStreamDriver`` is the transport of any device that streams on a serial port
(``nmea`` uses it with its own codec); ``SerialLineDriver`` is it with the line codec.

The port is opened and closed in an executor (pyserial-asyncio-fast reads it on the
loop without blocking). Each chunk read becomes one ``put_samples`` call. The
connection is a small state machine::

    starting ──open──► open ──I/O error──► waiting ──open──► open ...
        │                                     ▲  │
        └──────────open failed────────────────┘  └─(any state) cancel ──► stopped

How long ``waiting`` lasts depends on the fault (see ``gateway.retry``). The
configured path is resolved at every open, so a ``/dev/serial/by-id/...`` symlink
that disappears with an unplugged adapter and comes back pointing to another
``ttyUSBn`` is followed.

Backpressure: when the sink reports itself congested after a chunk, reading stops
(the transport is paused, the port stays open) until the sink has room again. The
bytes wait in the kernel's tty buffer, and once that is full the device waits too
if the line has flow control (RTS/CTS); without it the UART's buffer overflows,
outside the gateway. Either way nothing read is dropped for want of room.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import serial
from serial_asyncio_fast import SerialTransport, connection_for_serial

from drivers.fault_log import FaultLog
from drivers.off_loop import open_off_loop
from drivers.open_faults import FAILURE_TEXT, classify_loss, classify_open_error
from drivers.serial_line.codec import Decoded, LineDecoder
from drivers.serial_line.settings import SerialLineSettings
from drivers.serial_port import Parity
from gateway.errors import DriverError
from gateway.interfaces import DeviceStatus, SampleSink
from gateway.reading import DeadLetter
from gateway.retry import Backoff, Failure

# Each driver logs under ``drivers.<name>``; ``drivers.serial_line`` is the name the line
# driver logged under before it became a package, and log filters rely on it.


class _LineProtocol(asyncio.Protocol):
    """Hands every chunk to the driver and resolves ``lost`` when the port closes."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class StreamCodec(Protocol):
    """A sans-io codec of a byte stream: what ``SerialStreamDriver`` feeds."""

    def feed(self, data: bytes, ts: float) -> Decoded: ...

    def reset(self, ts: float) -> DeadLetter | None:
        """Forget a partial record (the port closed); it is returned as a dead letter."""


class StreamPortSettings(Protocol):
    """The keys a streaming serial driver reads: a port, and how often to read it."""

    @property
    def id(self) -> str: ...
    @property
    def driver(self) -> str: ...
    @property
    def port(self) -> str: ...
    @property
    def baudrate(self) -> int: ...
    @property
    def bytesize(self) -> int: ...
    @property
    def parity(self) -> Parity: ...
    @property
    def stopbits(self) -> float: ...
    @property
    def reconnect_min(self) -> float: ...
    @property
    def reconnect_max(self) -> float: ...
    @property
    def read_interval(self) -> float: ...


CodecT = TypeVar("CodecT", bound=StreamCodec)


class SerialStreamDriver(Generic[CodecT]):
    """Reads a device that streams records on a serial port into a ``SampleSink``.

    The codec turns bytes into records; this class owns the port, pacing,
    backpressure and reconnects. ``serial_line`` and ``nmea`` are such devices.
    """

    def __init__(
        self,
        settings: StreamPortSettings,
        sink: SampleSink,
        codec: CodecT,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.port:
            raise DriverError(settings.id, f"{settings.driver} needs a port")
        self.device_id = settings.id
        self.settings = settings
        self.status = DeviceStatus()
        self.codec = codec
        # The device path the port was last opened on (the symlink resolved).
        self.opened_path: str | None = None
        self._sink = sink
        self._backoff = backoff or Backoff(settings.reconnect_min, settings.reconnect_max)
        self._clock = clock
        self._log = logging.getLogger(f"drivers.{settings.driver}")
        self._faults = FaultLog(settings.id, self._log)
        # Dead letters per reason since the port opened; the first of each is logged.
        self._dead_counts: dict[str, int] = {}
        # The open port's transport, and the task that resumes it while reading is paused.
        self._transport: SerialTransport | None = None
        self._resume: asyncio.Task[None] | None = None
        # The timer that resumes reading after a read emptied the port (read_interval).
        self._paced: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.status.state = "stopped"

    async def _run(self) -> None:
        was_open = False
        while True:
            try:
                transport, protocol = await self._open()
            except (OSError, ValueError) as exc:
                fault = classify_open_error(exc)
                self._open_failed(fault, exc)
            else:
                if was_open:
                    self.status.reconnects += 1
                was_open = True
                self._faults.clear()
                self.status.state = "open"
                self._log.info("%s: port open on %s", self.device_id, self.opened_path)
                opened_at = time.monotonic()
                error = await self._read_until_closed(transport, protocol)
                fault = classify_loss(time.monotonic() - opened_at)
                self._closed(error)
            self.status.state = "waiting"
            await asyncio.sleep(self._backoff.delay(fault))

    async def _open(self) -> tuple[SerialTransport, _LineProtocol]:
        port = await open_off_loop(self._open_port, serial.Serial.close)
        loop = asyncio.get_running_loop()
        self.opened_path = port.port
        protocol = _LineProtocol(self._on_data)
        transport, _ = await connection_for_serial(loop, lambda: protocol, port)
        # Set before the loop runs again: the first chunk arrives in a later iteration.
        self._transport = transport
        return transport, protocol

    def _open_port(self) -> serial.Serial:
        """Runs in an executor: resolve the symlink now, then open and configure."""
        return serial.Serial(
            port=os.path.realpath(self.settings.port),
            baudrate=self.settings.baudrate,
            bytesize=self.settings.bytesize,
            parity=self.settings.parity,
            stopbits=self.settings.stopbits,
            # A second reader on the same port would steal half the lines.
            exclusive=True,
        )

    async def _read_until_closed(
        self, transport: SerialTransport, protocol: _LineProtocol
    ) -> Exception | None:
        try:
            return await asyncio.shield(protocol.lost)
        except asyncio.CancelledError:
            transport.abort()
            # The transport closes the port in an executor; run() returns once it has.
            await asyncio.shield(protocol.lost)
            raise
        finally:
            await self._stop_resuming()

    def _on_data(self, data: bytes) -> None:
        ts = self._clock()
        out = self.codec.feed(data, ts)
        if out.samples:
            self._sink.put_samples(out.samples)
            self.status.readings += len(out.samples)
            self.status.last_reading_ts = ts
        for dead in out.dead_letters:
            self._dead_letter(dead)
        if self._resume is None and self._sink.congested:
            self._pause()
        elif self._paced is None and self.settings.read_interval > 0 and self._sink.paced:
            self._pace_if_drained()

    def _pause(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.pause_reading()
        self.status.pauses += 1
        self._log.debug("%s: store congested; reading paused", self.device_id)
        self._resume = asyncio.create_task(
            self._resume_when_room(transport), name=f"{self.device_id}-resume"
        )

    async def _resume_when_room(self, transport: SerialTransport) -> None:
        await self._sink.wait_for_room()
        self._resume = None
        if self._paced is None and not transport.is_closing():
            transport.resume_reading()

    def _pace_if_drained(self) -> None:
        """Stop reading for ``read_interval`` once a read has emptied the port.

        A device that keeps the port full is read back to back; one whose lines
        trickle in is read once per interval, a chunk of lines per wake.
        """
        transport = self._transport
        port = None if transport is None or transport.is_closing() else transport.serial
        if transport is None or port is None:
            return
        try:
            waiting = port.in_waiting
        except (OSError, serial.SerialException):
            return  # the port is going away: the next read reports it
        if waiting:
            return
        transport.pause_reading()
        self._paced = asyncio.get_running_loop().call_later(
            self.settings.read_interval, self._end_pace, transport
        )

    def _end_pace(self, transport: SerialTransport) -> None:
        self._paced = None
        if self._resume is None and not transport.is_closing():
            transport.resume_reading()

    async def _stop_resuming(self) -> None:
        resume, self._resume = self._resume, None
        self._transport = None
        if self._paced is not None:
            self._paced.cancel()
            self._paced = None
        if resume is not None:
            resume.cancel()
            await asyncio.gather(resume, return_exceptions=True)

    def _dead_letter(self, dead: DeadLetter) -> None:
        self._sink.put_dead_letter(dead)
        self.status.errors += 1
        self.status.last_error = dead.reason
        seen = self._dead_counts.get(dead.reason, 0)
        self._dead_counts[dead.reason] = seen + 1
        if not seen:
            self._log.warning(
                "%s: dead letter (%s), kept with its raw bytes; more are counted",
                self.device_id,
                dead.reason,
            )

    def _closed(self, error: Exception | None) -> None:
        tail = self.codec.reset(self._clock())
        if tail is not None:
            self._dead_letter(tail)
        if self._dead_counts:
            summary = ", ".join(f"{n} {reason}" for reason, n in self._dead_counts.items())
            self._log.info("%s: dead letters while open: %s", self.device_id, summary)
            self._dead_counts.clear()
        message = f"connection lost on {self.opened_path}: {error}"
        self.status.errors += 1
        self.status.last_error = message
        self._faults.report(logging.WARNING, message)

    def _open_failed(self, fault: Failure, exc: OSError | ValueError) -> None:
        message = f"{FAILURE_TEXT[fault]}: {exc}"
        if fault is Failure.DENIED:
            message += " (is the gateway's user in the port's group, e.g. dialout?)"
        self.status.errors += 1
        self.status.last_error = message
        self._faults.report(logging.ERROR if fault is Failure.DENIED else logging.WARNING, message)


class SerialLineDriver(SerialStreamDriver[LineDecoder]):
    """Reads a line-oriented device on a serial port into a ``SampleSink``."""

    def __init__(
        self,
        settings: SerialLineSettings,
        sink: SampleSink,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            settings, sink, LineDecoder.from_settings(settings), backoff=backoff, clock=clock
        )
