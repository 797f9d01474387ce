"""``edge-gateway record --port P --out FILE``: a serial port's raw bytes and their timing.

What a device sends is written to a capture (``simulators.capture``) as it is read, so
``edge-gateway sim replay FILE`` can play a field problem back without the device. The
port is only read: nothing is written to it, and its control lines are left as opened.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import serial

from drivers.serial_port import BAUDRATE_RULE, MAX_BAUDRATE, MIN_BAUDRATE
from simulators.capture import MAX_CHUNK, CaptureWriter, PortSetup

PROG = "edge-gateway record"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
# A read returns at most this late when no byte comes, so a stop is seen promptly.
POLL = 0.1
_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_PARITY |= {"M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}


def _whole(what: str, low: int, high: int, rule: str) -> Callable[[str], int]:
    """An argparse type: a whole number of ``what`` from ``low`` to ``high``."""

    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{rule}, not {text!r}")
        return int(text)

    parse.__name__ = what  # argparse names the type in its errors
    return parse


_baudrate = _whole("baudrate", MIN_BAUDRATE, MAX_BAUDRATE, BAUDRATE_RULE)
_size = _whole("bytes", 1, 100 * DEFAULT_MAX_BYTES, f"must be 1 to {100 * DEFAULT_MAX_BYTES}")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Record what a serial device sends, with its timing, into a capture file (JSON "
        "lines, see docs/drivers.md); `edge-gateway sim replay FILE` plays it back. Runs "
        "until SIGINT/SIGTERM, --duration or --max-bytes."
    )
    p.add_argument("--port", required=True, help="the serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="a new file")
    p.add_argument("--baudrate", type=_baudrate, default=9600, help="bits per second (9600)")
    p.add_argument("--bytesize", type=int, choices=(5, 6, 7, 8), default=8)
    p.add_argument("--parity", choices=tuple(_PARITY), default="N")
    p.add_argument("--stopbits", type=float, choices=(1, 1.5, 2), default=1)
    p.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--max-bytes",
        type=_size,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"stop once N bytes are recorded (default {DEFAULT_MAX_BYTES}); the file is "
        "about twice that",
    )


def run(args: argparse.Namespace) -> int:
    setup = PortSetup(args.port, args.baudrate, args.bytesize, args.parity, args.stopbits)
    try:
        port = serial.Serial(
            setup.port,
            setup.baudrate,
            bytesize=setup.bytesize,
            parity=_PARITY[setup.parity],
            stopbits=setup.stopbits,
            timeout=POLL,
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        print(f"{PROG}: cannot open {setup.port}: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            writer = CaptureWriter(args.out, setup, time.time())
        except OSError as exc:
            print(f"{PROG}: cannot create {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, _setter(stop)) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            return _record(port, writer, stop, args.duration, args.max_bytes)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        port.close()


def _setter(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    return handler


def _record(
    port: serial.Serial,
    writer: CaptureWriter,
    stop: threading.Event,
    duration: float | None,
    max_bytes: int,
) -> int:
    print(
        f"recording {port.port} at {port.baudrate} baud into {writer.path}; stop with Ctrl-C",
        file=sys.stderr,
        flush=True,
    )
    start = time.monotonic()
    code, stopped = 0, "signal"
    while not stop.is_set():
        now = time.monotonic() - start
        if duration is not None and now >= duration:
            stopped = "duration"
            break
        if writer.bytes >= max_bytes:
            stopped = "max-bytes"
            print(f"{PROG}: stopped at --max-bytes {max_bytes}", file=sys.stderr)
            break
        try:
            # Whatever is waiting, else the first byte to come (or nothing within POLL):
            # each chunk is timed as it arrives.
            want = min(MAX_CHUNK, max_bytes - writer.bytes, max(1, port.in_waiting))
            data = port.read(want)
        except (serial.SerialException, OSError) as exc:
            print(f"{PROG}: the port failed (unplugged?): {exc}", file=sys.stderr)
            code, stopped = 1, "port-lost"
            break
        if data:
            try:
                writer.add(time.monotonic() - start, data)
            except OSError as exc:
                print(f"{PROG}: cannot write {writer.path}: {exc.strerror or exc}", file=sys.stderr)
                return 1
    end = time.monotonic() - start
    try:
        writer.close(end, stopped)
    except OSError as exc:
        print(f"{PROG}: cannot write {writer.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(
        f"recorded {writer.bytes} bytes in {writer.chunks} chunks over {end:.1f} s "
        f"into {writer.path}",
        file=sys.stderr,
    )
    return code
