"""The faults of the soak campaign, each a step behind one interface, and the rig they act on.

A step injects its fault into the running rig and returns once the gateway has got
over it: delivery has resumed (the uplink acknowledged ``progress`` readings committed
after the fault). It returns one line saying what it did, for the report. A step that
replaces the gateway process (kill -9, a damaged page, and a power cut) says so in
``restarts_gateway``: the campaign keeps those out of its steady phase, so that one
process lives long enough for the RSS and fd trend to mean something.

A power cut needs the data directory on the power-cut filesystem (``Rig.powercut``,
whose durable state lives on ``Rig.data_disk``): it cuts, remounts, starts the gateway
and waits for delivery like ``KillNine``. It needs no exclusion in the ledger: the
campaign runs with ``durability = "full"``, so what the cut undoes was never committed
nor delivered, and the database must pass ``integrity_check`` after every cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import pytest

from simulators import PtyDevice
from tests.soak.ledger import Ledger, integrity, read_database
from tests.support.common import wait_until
from tests.support.gateway_proc import GatewayProcess
from tests.support.gateway_status import (
    acked_at_least,
    committed_at_least,
    last_seq,
    uplink_state_is_not,
)
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.powercut import PowerCutRig
from tests.support.tcp_proxy import TcpProxy

Condition = Callable[[], bool | Awaitable[bool]]

# Status is polled this often while waiting: often enough to be quick, rarely enough
# not to load a busy machine.
POLL = 0.2


@dataclass
class Rig:
    gw: GatewayProcess
    proxy: TcpProxy
    broker: Mosquitto
    subscriber: MqttSubscriber
    devices: dict[str, PtyDevice]
    data_disk: Path  # the filesystem of its own that holds the data directory
    ledger: Ledger
    progress: int  # readings acknowledged after a fault for delivery to count as resumed
    timeout: float  # deadline of every condition a step waits for
    # The power-cut filesystem the data directory is on, its backing on data_disk.
    powercut: PowerCutRig | None = None
    unplugs: int = 0
    damages: int = 0
    cuts: int = 0

    async def wait(self, predicate: Condition, message: str) -> None:
        await wait_until(predicate, timeout=self.timeout, interval=POLL, message=message)

    async def delivery_resumes(self, after: str) -> None:
        mark = await last_seq(self.gw)
        try:
            await self.wait(
                acked_at_least(self.gw, mark + self.progress), f"delivery resumed after {after}"
            )
        except pytest.fail.Exception as e:
            health: object = "unknown (no status)"
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                health = (await self.gw.status())["health"]
            errors = [line for line in self.gw.log_text().splitlines() if " ERROR " in line]
            pytest.fail(f"{e}; health {health}; last errors in the log: {errors[-3:]}")

    async def restart_gateway(self) -> None:
        self.gw.start()
        await self.gw.wait_healthy(timeout=self.timeout)


class FaultStep(Protocol):
    name: str
    restarts_gateway: bool

    async def run(self, rig: Rig) -> str:
        """Inject the fault, wait until the gateway got over it; say what happened."""


class KillNine:
    name = "kill -9"
    restarts_gateway = True

    async def run(self, rig: Rig) -> str:
        assert rig.gw.proc is not None
        killed = rig.gw.proc.pid
        rig.gw.kill9()
        await rig.restart_gateway()
        await rig.delivery_resumes(self.name)
        assert rig.gw.proc is not None
        return f"pid {killed} killed, restarted as {rig.gw.proc.pid}"


class PowerCut:
    """Power lost under load: what was not fsynced is gone (every other cut torn).

    The gateway is SIGKILLed by the cut, with the disk frozen first; the power comes
    back (a fresh mount), the database must pass ``integrity_check`` before the gateway
    starts on it, and delivery must resume.
    """

    name = "power cut"
    restarts_gateway = True

    async def run(self, rig: Rig) -> str:
        powercut, proc = rig.powercut, rig.gw.proc
        assert powercut is not None, "a power cut needs the data directory on the rig"
        assert proc is not None
        tear = rig.cuts % 2 == 0  # the first torn: a short campaign cuts once
        # In a thread: the proxy and the devices run on this loop meanwhile.
        summary = await asyncio.to_thread(powercut.cut, [proc], tear=tear)
        rig.gw.proc = None
        rig.cuts += 1
        await asyncio.to_thread(powercut.mount)
        check = integrity(rig.gw.data_dir / "readings.db")
        if check != "ok":
            pytest.fail(f"integrity_check after power cut {rig.cuts} ({summary}): {check}")
        await rig.restart_gateway()
        await rig.delivery_resumes(self.name)
        return (
            f"pid {proc.pid} cut ({'torn' if tear else 'unsynced dropped'}, seed "
            f"{summary['seed']}, {len(summary['torn'])} pages torn); integrity ok, restarted"
        )


class LinkBlackhole:
    """The route dies silently until the keepalive notices, then the router reboots (RST)."""

    name = "link dead"
    restarts_gateway = False

    async def run(self, rig: Rig) -> str:
        rig.proxy.blackhole()
        mark = await last_seq(rig.gw)
        await rig.wait(committed_at_least(rig.gw, mark + rig.progress), "commits while dead")
        await rig.wait(uplink_state_is_not(rig.gw, "connected"), "dead link noticed")
        rig.proxy.reset()
        rig.proxy.resume()
        await rig.delivery_resumes(self.name)
        return "blackholed until the uplink noticed, then reset"


class LinkReset:
    name = "link reset"
    restarts_gateway = False

    async def run(self, rig: Rig) -> str:
        accepted = rig.proxy.accepted
        rig.proxy.reset()
        await rig.wait(lambda: rig.proxy.accepted > accepted, "reconnect after RST")
        await rig.delivery_resumes(self.name)
        return "every connection reset (RST)"


class BrokerRestart:
    name = "broker restart"
    restarts_gateway = False

    async def run(self, rig: Rig) -> str:
        accepted = rig.proxy.accepted
        # In a thread: the proxy and the devices run on this loop meanwhile.
        await asyncio.to_thread(rig.broker.restart)
        await rig.wait(lambda: rig.proxy.accepted > accepted, "reconnect to the broker")
        await rig.delivery_resumes(self.name)
        return "mosquitto stopped (SIGTERM) and started again"


class UnplugReplug:
    """Each device in turn: pulled, noticed by the gateway, plugged back in, read again."""

    name = "unplug/replug"
    restarts_gateway = False

    def __init__(self, times: int) -> None:
        self.times = times

    async def run(self, rig: Rig) -> str:
        ids = sorted(rig.devices)
        for i in range(self.times):
            device_id = ids[i % len(ids)]
            device = rig.devices[device_id]
            await device.unplug()
            await rig.wait(self._state_is_not(rig, device_id, "open"), f"{device_id} unplugged")
            read = (await rig.gw.status())["devices"][device_id]["readings"]
            device.replug()
            await rig.wait(self._reading_beyond(rig, device_id, read), f"{device_id} read again")
            rig.unplugs += 1
        await rig.delivery_resumes(self.name)
        return f"{self.times} unplug/replug cycles over {', '.join(ids)}"

    @staticmethod
    def _state_is_not(rig: Rig, device_id: str, state: str) -> Condition:
        async def check() -> bool:
            return bool((await rig.gw.status())["devices"][device_id]["state"] != state)

        return check

    @staticmethod
    def _reading_beyond(rig: Rig, device_id: str, count: int) -> Condition:
        async def check() -> bool:
            device = (await rig.gw.status())["devices"][device_id]
            return bool(device["state"] == "open" and device["readings"] > count)

        return check


class DiskFull:
    """The data directory's filesystem fills up (a file takes every free block) and is freed.

    The devices go on writing meanwhile: the gateway must keep what it read and commit
    it once there is room again.
    """

    name = "disk full"
    restarts_gateway = False

    async def run(self, rig: Rig) -> str:
        filler = rig.data_disk / "filler"
        size = await asyncio.to_thread(fill_filesystem, filler)
        try:
            await rig.wait(self._reason(rig, present=True), "disk full reported")
            written = lines_written(rig)
            await rig.wait(
                lambda: lines_written(rig) >= written + rig.progress, "lines read while full"
            )
        finally:
            filler.unlink()
        await rig.wait(self._reason(rig, present=False), "disk full cleared")
        await rig.delivery_resumes(self.name)
        return f"filled with {size // 1024} KiB until ENOSPC, then freed"

    @staticmethod
    def _reason(rig: Rig, present: bool) -> Condition:
        async def check() -> bool:
            reasons = (await rig.gw.status())["health"]["reasons"]
            return any("disk full" in r for r in reasons) == present

        return check


class DamagedPage:
    """With the gateway stopped, a page in the middle of readings.db is overwritten.

    What is checked here is what is guaranteed: the gateway comes back and delivery
    resumes. Readings whose only copy was in the file (not yet acknowledged by the
    broker) are handed to the ledger as exclusions; seqs must still never be reused.
    """

    name = "damaged page"
    restarts_gateway = True

    async def run(self, rig: Rig) -> str:
        db = rig.gw.data_dir / "readings.db"
        code = rig.gw.terminate()
        if code != 0:
            pytest.fail(f"gateway exited with {code} on SIGTERM:\n{rig.gw.log_text()}")
        damaged = rig.ledger.add_damaged(read_database(db))
        aside = moved_aside(rig.gw.data_dir)
        page, pages = overwrite_middle_page(db)
        rig.damages += 1
        await rig.restart_gateway()
        await rig.delivery_resumes(self.name)
        moved = "yes" if moved_aside(rig.gw.data_dir) > aside else "no"
        return (
            f"page {page} of {pages} overwritten; {len(damaged.seqs)} readings in the file, "
            f"{len(damaged.unacked)} of them unacknowledged (excluded); moved aside: {moved}"
        )


def lines_written(rig: Rig) -> int:
    return sum(d.lines_written for d in rig.devices.values())


def moved_aside(data_dir: Path) -> int:
    files = data_dir.glob("readings.db.corrupt-*")
    return sum(1 for f in files if not f.name.endswith(("-wal", "-shm")))


def overwrite_middle_page(db: Path) -> tuple[int, int]:
    """Random bytes over the page in the middle of the file; (page number, pages)."""
    with db.open("r+b") as f:
        header = f.read(100)
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = os.fstat(f.fileno()).st_size // page_size
        page = max(2, pages // 2)  # 1-based; page 1 holds the header
        f.seek((page - 1) * page_size)
        f.write(os.urandom(page_size))
        f.flush()
        os.fsync(f.fileno())
    return page, pages


def fill_filesystem(filler: Path) -> int:
    """Make ``filler`` take every free block (until ENOSPC); its size in bytes.

    Allocated in one call where the filesystem can, topped up by writes until the
    kernel refuses: a few hundred MiB are not written byte by byte.
    """
    stat = os.statvfs(filler.parent)
    with filler.open("wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            os.posix_fallocate(f.fileno(), 0, stat.f_bavail * stat.f_frsize)
        f.seek(0, os.SEEK_END)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        return f.tell()


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A filesystem of ``size`` at ``where``: small enough to fill, and the gateway's alone."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)
