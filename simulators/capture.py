"""Captures: the raw bytes of a serial port with their timing, in a file a person can read.

A capture is JSON lines (UTF-8), version 1:

    {"format": "edge-gateway-capture", "version": 1, "port": "/dev/ttyUSB0",
     "baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1, "started": 1764086400.12}
    {"t": 0.0131, "hex": "24475047..."}
    {"t": 0.0152, "hex": "0d0a"}
    {"end": 12.503, "chunks": 2, "bytes": 1187, "stopped": "duration"}

The first line says what the file is and how the port was set; then one line per read
of the port: ``t`` seconds since the recording started (monotonic, never decreasing) and
the bytes read, in lower-case hex; last, a trailer with the recording's length and why
it stopped. A recording killed before its trailer is still a capture (its last chunk
ends it); a torn last line is dropped. Line by line, a file stays valid whatever point
the recording reaches, and ``jq -r .hex FILE | xxd -r -p`` prints the bytes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gateway.errors import GatewayError

FORMAT = "edge-gateway-capture"
VERSION = 1
# One chunk is one read of the port: reads take at most this many bytes.
MAX_CHUNK = 4096
# Bounds of what replay loads (it reads the whole capture before playing it).
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_LINE = 2 * MAX_CHUNK + 64
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


class CaptureError(GatewayError):
    """A file that is not a capture this version reads; the message names the line."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class PortSetup:
    """How the port was set while it was recorded."""

    port: str
    baudrate: int
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1


@dataclass(frozen=True, slots=True)
class Capture:
    setup: PortSetup
    started: float  # epoch seconds
    chunks: list[tuple[float, bytes]]  # (seconds since the start, bytes read)
    end: float  # the recording's length: its trailer's, else its last chunk's time
    # Why the recording stopped: "duration", "max-bytes", "signal" or "port-lost" (None:
    # no trailer, it was killed).
    stopped: str | None

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.chunks)


class CaptureWriter:
    """Appends chunks to a new capture file, one flushed line each."""

    def __init__(self, path: Path, setup: PortSetup, started: float) -> None:
        self.path = path
        self.chunks = 0
        self.bytes = 0
        self._last_t = 0.0
        # "x": an existing file (another capture) is never overwritten.
        self._file: IO[str] = path.open("x", encoding="utf-8")
        self._line(
            {
                "format": FORMAT,
                "version": VERSION,
                "port": setup.port,
                "baudrate": setup.baudrate,
                "bytesize": setup.bytesize,
                "parity": setup.parity,
                "stopbits": setup.stopbits,
                "started": round(started, 6),
            }
        )

    def add(self, t: float, data: bytes) -> None:
        for start in range(0, len(data), MAX_CHUNK):
            part = data[start : start + MAX_CHUNK]
            self._last_t = max(self._last_t, round(t, 6))
            self._line({"t": self._last_t, "hex": part.hex()})
            self.chunks += 1
            self.bytes += len(part)

    def close(self, end: float, stopped: str) -> None:
        end = max(self._last_t, round(end, 6))
        self._line({"end": end, "chunks": self.chunks, "bytes": self.bytes, "stopped": stopped})
        self._file.close()

    def _line(self, obj: dict[str, object]) -> None:
        self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
        # Flushed per line: a recording that is killed keeps everything it read.
        self._file.flush()


def read_capture(path: Path) -> Capture:
    """The capture in ``path``, checked line by line; ``CaptureError`` names what is wrong."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CaptureError(
                f"{path}: {size} bytes; a capture is at most {MAX_FILE_BYTES} bytes "
                "(record with a smaller --max-bytes)"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = raw.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    elif len(lines) > 1:
        # No line end: the recording was killed while writing its last line.
        lines.pop()
    if not lines:
        raise CaptureError(f"{path}: empty; not a capture")
    setup, started = _header(path, lines[0])
    chunks: list[tuple[float, bytes]] = []
    end: float | None = None
    stopped: str | None = None
    for number, line in enumerate(lines[1:], start=2):
        where = f"{path}:{number}"
        if end is not None:
            raise CaptureError(f"{where}: a line after the trailer")
        obj = _object(where, line)
        if "end" in obj:
            end, stopped = _trailer(where, obj, chunks)
            continue
        t = _seconds(where, obj.get("t"), "t")
        if chunks and t < chunks[-1][0]:
            raise CaptureError(f"{where}: t goes back in time ({t} after {chunks[-1][0]})")
        data = obj.get("hex")
        if not isinstance(data, str) or not _HEX.fullmatch(data) or len(data) > 2 * MAX_CHUNK:
            raise CaptureError(
                f"{where}: hex must be 1 to {MAX_CHUNK} bytes as lower-case hex digits"
            )
        chunks.append((t, bytes.fromhex(data)))
    if end is None:
        end = chunks[-1][0] if chunks else 0.0
    return Capture(setup, started, chunks, end, stopped)


def _object(where: str, line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise CaptureError(f"{where}: a line of {len(line)} bytes; a capture's are shorter")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise CaptureError(f"{where}: not a JSON object") from None
    if not isinstance(obj, dict):
        raise CaptureError(f"{where}: not a JSON object")
    return obj


def _header(path: Path, line: bytes) -> tuple[PortSetup, float]:
    where = f"{path}:1"
    obj = _object(where, line)
    if obj.get("format") != FORMAT:
        raise CaptureError(f'{where}: not a capture (its first line has no "format": "{FORMAT}")')
    if obj.get("version") != VERSION:
        raise CaptureError(
            f"{where}: capture version {obj.get('version')!r}; this gateway reads version {VERSION}"
        )
    port = obj.get("port")
    baudrate = obj.get("baudrate")
    if not isinstance(port, str) or type(baudrate) is not int or baudrate <= 0:
        raise CaptureError(f"{where}: port must be a string and baudrate a positive integer")
    bytesize, parity, stopbits = (
        obj.get("bytesize", 8),
        obj.get("parity", "N"),
        obj.get("stopbits", 1),
    )
    if bytesize not in (5, 6, 7, 8) or parity not in tuple("NEOMS") or stopbits not in (1, 1.5, 2):
        raise CaptureError(f"{where}: bytesize, parity or stopbits is not a serial setting")
    started = _seconds(where, obj.get("started"), "started")
    return PortSetup(port, baudrate, int(bytesize), str(parity), float(stopbits)), started


def _trailer(
    where: str, obj: dict[str, Any], chunks: list[tuple[float, bytes]]
) -> tuple[float, str | None]:
    end = _seconds(where, obj.get("end"), "end")
    if chunks and end < chunks[-1][0]:
        raise CaptureError(f"{where}: end {end} is before the last chunk")
    if obj.get("chunks") != len(chunks) or obj.get("bytes") != sum(len(d) for _, d in chunks):
        raise CaptureError(
            f"{where}: the trailer counts {obj.get('chunks')} chunks and {obj.get('bytes')} "
            "bytes, which is not what the file holds (lines lost or edited?)"
        )
    stopped = obj.get("stopped")
    return end, stopped if isinstance(stopped, str) else None


def _seconds(where: str, value: object, name: str) -> float:
    # bool is an int subclass, and a capture never spells a time as true.
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CaptureError(f"{where}: {name} must be a number of seconds, 0 or more")
    if not math.isfinite(value) or value < 0:
        raise CaptureError(f"{where}: {name} must be a number of seconds, 0 or more")
    return float(value)
