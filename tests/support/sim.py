"""Simulated devices from outside: ``edge-gateway sim`` as a process, and a reader on a
device's link that reads it as a gateway would."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The sub-command module on its own, as gateway.cli wires it under `edge-gateway sim`.
SIM = (
    "import argparse, sys\n"
    "from simulators.cli import configure_parser, run\n"
    "p = argparse.ArgumentParser(prog='edge-gateway sim')\n"
    "configure_parser(p)\n"
    "sys.exit(run(p.parse_args()))\n"
)


async def start_sim(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SIM,
        *args,
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop(proc: asyncio.subprocess.Process, sig: signal.Signals) -> tuple[int, bytes]:
    proc.send_signal(sig)
    async with asyncio.timeout(10):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err


class PortReader:
    """Reads a device's slave through its link, without blocking, as a gateway would."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        self.data = bytearray()
        self.hung_up = False

    def poll(self) -> bytearray:
        while not self.hung_up:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:  # EIO: the other side is gone
                self.hung_up = True
                break
            if not chunk:
                self.hung_up = True
            self.data += chunk
        return self.data

    def lines(self) -> int:
        return self.poll().count(b"\n")

    def close(self) -> None:
        os.close(self.fd)


def counter_bytes(first: int, last: int) -> bytes:
    """What the counter simulator writes for lines ``first`` to ``last``."""
    return b"".join(b"n=%d\n" % i for i in range(first, last + 1))
