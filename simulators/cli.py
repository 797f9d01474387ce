"""``edge-gateway sim KIND --link PATH``: one simulated serial device until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from pymodbus.constants import ExcCodes

from simulators.capture import CaptureError, read_capture
from simulators.modbus_bus import DEFAULT_TURNAROUND, ModbusBus
from simulators.pty_device import PtyDevice
from simulators.replay import ReplayDevice
from simulators.sources import KINDS


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def _slave_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be slave ids like 1,2,3, not {text}") from None
    if not all(1 <= i <= 247 for i in ids):
        raise argparse.ArgumentTypeError(f"slave ids are 1 to 247, not {text}")
    return ids


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run one simulated serial device on a pseudo-terminal whose slave is symlinked at "
        "--link; point a device's port at that path. Runs until SIGTERM or SIGINT."
    )
    p.add_argument(
        "kind",
        choices=(*KINDS, "modbus", "replay"),
        help=(
            "thermo: t and h drifting; counter: n=1, 2, 3…; arduino: the thermo as free text "
            '("Temperature: 21.5 C, Humidity: 40.2 %%", for format = "regex"); gps: an NMEA '
            "receiver on a moving track, one fix (GGA, RMC, VTG, GSA, GSV) per line of --rate; "
            "modbus: a Modbus RTU bus of simulated energy meters (see docs/drivers.md); "
            "replay: play back a capture made by `edge-gateway record` (sim replay FILE)"
        ),
    )
    p.add_argument("capture", nargs="?", type=Path, metavar="FILE", help="replay: the capture")
    p.add_argument("--link", type=Path, required=True, help="symlink to create for the device")
    p.add_argument("--rate", type=_positive, default=1.0, help="lines per second (default 1)")
    p.add_argument(
        "--count", type=_count, help="stop writing after N lines (the device stays plugged in)"
    )
    p.add_argument(
        "--garbage-every",
        type=_count,
        default=0,
        metavar="N",
        help=(
            "after every N lines, write one line of binary garbage (gps: a sentence with "
            "a bad checksum)"
        ),
    )
    p.add_argument(
        "--unplug-every",
        type=_positive,
        metavar="S",
        help="unplug the device every S seconds (close the pty, remove the link)",
    )
    p.add_argument(
        "--unplug-for",
        type=_positive,
        default=1.0,
        metavar="S",
        help="how long each unplug lasts before a new pty is linked (default 1)",
    )
    modbus = p.add_argument_group("modbus")
    modbus.add_argument(
        "--slaves", type=_slave_ids, default=[1], help="slave ids on the bus (default 1)"
    )
    modbus.add_argument("--silent", type=_slave_ids, default=[], help="slave ids that never answer")
    modbus.add_argument(
        "--exception",
        type=_slave_ids,
        default=[],
        help="slave ids that answer every request with exception 4 (device failure)",
    )
    modbus.add_argument(
        "--slow",
        type=_slave_ids,
        default=[],
        help="slave ids that answer after --slow-delay seconds",
    )
    modbus.add_argument(
        "--slow-delay", type=_positive, default=1.0, help="how late the slow ones are (default 1)"
    )
    modbus.add_argument(
        "--baudrate",
        type=int,
        default=9600,
        help="bus speed: bytes cross the pty at this pace, 11 bits each (default 9600)",
    )
    modbus.add_argument(
        "--turnaround",
        type=_positive,
        default=DEFAULT_TURNAROUND,
        metavar="S",
        help=(
            "seconds from a request's last byte to the answer's first, at least the silent "
            f"interval (default {DEFAULT_TURNAROUND:g})"
        ),
    )
    replay = p.add_argument_group("replay")
    replay.add_argument(
        "--speed", type=_positive, default=1.0, help="play X times as fast (default 1)"
    )
    replay.add_argument("--loop", action="store_true", help="start again at the end, forever")
    replay.add_argument(
        "--delay",
        type=float,
        default=1.0,
        metavar="S",
        help="wait S seconds after linking before the first byte, so a gateway waiting for "
        "the port has opened it (default 1)",
    )
    p.add_argument("--start", type=int, default=1, help="first n of the counter (default 1)")
    p.add_argument("--seed", type=int, help="seed for the thermo drift and the garbage")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if (args.kind == "replay") != (args.capture is not None):
        print("edge-gateway sim: FILE goes with replay, and only with it", file=sys.stderr)
        return 2
    try:
        if args.kind == "modbus":
            return await _run_modbus(args, stop)
        if args.kind == "replay":
            return await _run_replay(args, stop)
        device = PtyDevice(
            args.kind,
            args.link,
            rate=args.rate,
            count=args.count,
            garbage_every=args.garbage_every,
            unplug_every=args.unplug_every or 0.0,
            unplug_for=args.unplug_for,
            start=args.start,
            seed=args.seed,
        )
        async with device:
            print(
                f"simulated {args.kind} device on {device.slave_path}, linked at {args.link} "
                f"({args.rate:g} lines/s)",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
    except OSError as exc:
        print(f"edge-gateway sim: cannot create the device: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


async def _run_modbus(args: argparse.Namespace, stop: asyncio.Event) -> int:
    try:
        bus = ModbusBus(
            args.link,
            args.slaves,
            baudrate=args.baudrate,
            turnaround=args.turnaround,
            seed=args.seed,
        )
        for slave_id in args.silent:
            bus.meters[slave_id].silent = True
        for slave_id in args.exception:
            bus.meters[slave_id].exception = ExcCodes.DEVICE_FAILURE
        for slave_id in args.slow:
            bus.meters[slave_id].delay = args.slow_delay
    except (KeyError, ValueError) as exc:
        print(
            f"edge-gateway sim: --silent, --exception and --slow name slaves of --slaves ({exc})",
            file=sys.stderr,
        )
        return 2
    try:
        async with bus:
            ids = ",".join(map(str, args.slaves))
            print(
                f"simulated Modbus RTU bus (slaves {ids}) on {bus.slave_path}, "
                f"linked at {args.link}",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
    except (OSError, RuntimeError) as exc:
        print(f"edge-gateway sim: cannot create the bus: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run_replay(args: argparse.Namespace, stop: asyncio.Event) -> int:
    if not 0 <= args.delay < 3600:
        print("edge-gateway sim: --delay must be 0 to 3600 seconds", file=sys.stderr)
        return 2
    try:
        capture = read_capture(args.capture)
    except CaptureError as exc:
        print(f"edge-gateway sim: {exc}", file=sys.stderr)
        return exc.exit_code
    device = ReplayDevice(capture, args.link, speed=args.speed, loop=args.loop, paused=True)
    async with device:
        print(
            f"replaying {args.capture} ({capture.size} bytes over {capture.end:.1f} s, "
            f"recorded at {capture.setup.baudrate} baud) on {device.slave_path}, linked at "
            f"{args.link}",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.delay):
                await stop.wait()
        device.resume()
        finished = asyncio.ensure_future(device.finished.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait((finished, stopped), return_when=asyncio.FIRST_COMPLETED)
        if finished.done():
            # The device stays plugged in, as with --count, so the reader drains it.
            print("replay finished; the device stays linked until stopped", file=sys.stderr)
            await stopped
        finished.cancel()
    return 0
