"""The gateway with one lever of ``benchmarks.levers`` set that has no configuration key.

``python -m benchmarks.lever_run [options] -- run -c FILE`` starts the gateway as
``python -m gateway`` does, after setting what a user does not tune and the gateway
therefore does not expose: the event loop (uvloop), the page size and WAL sizes of a new
database, whether every commit rewrites the meta table's ``last_seq`` (as before this
was measured), and the tty's own batching (termios ``VMIN``). Benchmarks only: it
replaces module attributes before the gateway starts, which is how an experiment
switches a constant without the product growing a knob for it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import termios
from collections.abc import Sequence
from typing import Any

from drivers.serial_line.transport import SerialStreamDriver
from gateway.cli import main as gateway_main
from gateway.store import planner, schema
from gateway.store.planner import Totals, TransactionPlan


def _meta_every_commit() -> None:
    """Rewrite ``last_seq`` in every commit that hands out seqs (the earlier layout)."""
    meta_changes = planner.meta_changes

    def every_commit(
        plan: TransactionPlan, totals: Totals, written: Totals, last_seq: int
    ) -> list[tuple[str, int]]:
        meta = meta_changes(plan, totals, written, last_seq)
        if plan.last_seq and all(key != schema.META_LAST_SEQ for key, _ in meta):
            meta.append((schema.META_LAST_SEQ, plan.last_seq))
        return meta

    planner.meta_changes = every_commit


def _tty_batching(vmin: int, fallback: float) -> None:
    """Let the tty batch reads while the device is busy: termios ``VMIN`` = ``vmin``
    (``VTIME`` 0) makes the port readable in poll only once that many bytes are in the
    tty. A timer ``fallback`` seconds after each read takes what is left below that (a
    device gone quiet mid-batch); when it finds nothing, ``VMIN`` goes back to 1, so the
    next byte after a quiet spell is read at once, and to ``vmin`` again at that read."""
    open_transport = SerialStreamDriver._open
    on_data = SerialStreamDriver._on_data
    timers: dict[int, asyncio.TimerHandle] = {}
    batching_now: dict[int, bool] = {}

    def port_of(driver: SerialStreamDriver) -> Any:  # type: ignore[type-arg]
        """The open port (a ``serial.Serial``), or None when it is closed or closing."""
        transport = driver._transport
        if transport is None or transport.is_closing():
            return None
        return transport.serial

    def set_vmin(fd: int, n: int) -> None:
        attrs = termios.tcgetattr(fd)
        attrs[6][termios.VMIN] = n
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    async def opened(self: SerialStreamDriver) -> Any:  # type: ignore[type-arg]
        # After the transport is made: it sets pyserial's timeout, which rewrites termios.
        transport, protocol = await open_transport(self)
        set_vmin(port_of(self).fd, 1)
        batching_now[id(self)] = False
        return transport, protocol

    def read_rest(self: SerialStreamDriver) -> None:  # type: ignore[type-arg]
        port = port_of(self)
        if port is None:
            return
        waiting = port.in_waiting
        if waiting:
            # pyserial's read selects first, and select too waits for VMIN bytes.
            with_fallback(self, os.read(port.fd, waiting))
        else:
            set_vmin(port.fd, 1)
            batching_now[id(self)] = False

    def with_fallback(self: SerialStreamDriver, data: bytes) -> None:  # type: ignore[type-arg]
        on_data(self, data)
        port = port_of(self)
        if port is None:
            return
        if not batching_now.get(id(self)):
            set_vmin(port.fd, vmin)
            batching_now[id(self)] = True
        old = timers.pop(id(self), None)
        if old is not None:
            old.cancel()
        timers[id(self)] = asyncio.get_running_loop().call_later(fallback, read_rest, self)

    SerialStreamDriver._open = opened  # type: ignore[method-assign]
    SerialStreamDriver._on_data = with_fallback  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lever_run")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    parser.add_argument("--page-size", type=int, help="page size of a new database (bytes)")
    parser.add_argument("--autocheckpoint-bytes", type=int, help="WAL bytes between checkpoints")
    parser.add_argument("--journal-size-limit", type=int, help="bytes of WAL kept after one")
    parser.add_argument(
        "--meta-every-commit", action="store_true", help="rewrite last_seq in every commit"
    )
    parser.add_argument("--vmin", type=int, help="termios VMIN of every serial port (bytes)")
    parser.add_argument(
        "--vmin-fallback", type=float, default=0.005, help="seconds before a short batch is read"
    )
    parser.add_argument("gateway_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.uvloop:
        if sys.flags.optimize == 0:
            # uvloop's transports are not asyncio.Transport subclasses, which the local
            # server asserts of every connection (the harness starts this with -O).
            parser.error("--uvloop needs python -O")
        # Not a dependency: installed by hand only to measure it.
        importlib.import_module("uvloop").install()
    if args.page_size is not None:
        schema.PAGE_SIZE = args.page_size
    if args.autocheckpoint_bytes is not None:
        schema.WAL_AUTOCHECKPOINT_BYTES = args.autocheckpoint_bytes
    if args.journal_size_limit is not None:
        schema.JOURNAL_SIZE_LIMIT = args.journal_size_limit
    if args.meta_every_commit:
        _meta_every_commit()
    if args.vmin is not None:
        _tty_batching(args.vmin, args.vmin_fallback)
    rest = args.gateway_args[1:] if args.gateway_args[:1] == ["--"] else args.gateway_args
    return gateway_main(rest)


if __name__ == "__main__":
    sys.exit(main())
