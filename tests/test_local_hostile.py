"""The real gateway against hostile neighbours: sockets held by another process.

The gateway runs as its own process under a low file descriptor limit, as on a small
device; a helper process opens a thousand idle and slow connections from other
loopback addresses. The serial port must still reopen after an unplug, /healthz must
still answer, and every idle or slow connection must be cut within seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.local import parse_samples

# Low enough that a thousand sockets would exhaust it without the connection bounds.
FD_LIMIT = 256


class HostilePeers:
    """The helper process and the last state it reported."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.state: dict[str, int] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.state.update(json.loads(line))

    async def wait(self, predicate: Callable[[dict[str, int]], bool], message: str) -> None:
        def check() -> bool:
            if self._reader.done():
                self._reader.result()
            return predicate(self.state)

        await wait_until(check, timeout=60, message=message)


@asynccontextmanager
async def hostile_peers(
    port: int, sources: list[str], *, idle: int, slow: int
) -> AsyncIterator[HostilePeers]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.hostile_peers",
        "--port",
        str(port),
        "--sources",
        ",".join(sources),
        "--idle",
        str(idle),
        "--slow",
        str(slow),
        stdout=asyncio.subprocess.PIPE,
    )
    peers = HostilePeers(proc)
    try:
        yield peers
    finally:
        proc.kill()
        await proc.wait()
        peers._reader.cancel()


async def metrics(gw: GatewayProcess) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.base_url}/metrics") as resp,
    ):
        assert resp.status == 200
        return parse_samples(await resp.text())


async def replug_and_read(gw: GatewayProcess, dev: PtyDevice) -> None:
    """Unplug the device, plug it back in, and wait until the gateway reads it again."""
    await dev.unplug()

    async def lost() -> bool:
        state: str = (await gw.status())["devices"]["dev-a"]["state"]
        return state != "open"

    await wait_until(lost, timeout=30, message="the gateway to see the port gone")
    dev.replug()
    before = int((await gw.status())["devices"]["dev-a"]["readings"])

    async def reading_again() -> bool:
        device: dict[str, Any] = (await gw.status())["devices"]["dev-a"]
        return device["reconnects"] >= 1 and int(device["readings"]) > before + 10

    await wait_until(reading_again, timeout=30, message="the port reopened and read")


async def test_idle_and_slow_sockets_from_one_address_are_capped_and_cut(
    tmp_path: Path, gateway_process: GatewayProcess
) -> None:
    gw = gateway_process
    gw.fd_limit = FD_LIMIT
    gw.local_extra = {"header_timeout": "2s"}
    async with PtyDevice("counter", tmp_path / "dev-a", rate=50) as dev:
        gw.devices = [DeviceSpec("dev-a", dev.link)]
        gw.start()
        await gw.wait_healthy()
        async with hostile_peers(gw.local_port, ["127.0.0.2"], idle=500, slow=500) as peers:
            await peers.wait(lambda s: "attempted" in s, "every hostile connection attempted")
            # Another address is not held back by this neighbour.
            await gw.wait_healthy()
            await replug_and_read(gw, dev)

            # Idle and slow connections alike are cut by the header deadline: only the
            # scrape itself is left.
            async def all_cut() -> bool:
                samples = await metrics(gw)
                return samples["edge_gateway_local_connections"] == 1

            await wait_until(all_cut, timeout=60, message="every hostile connection cut")
        samples = await metrics(gw)
    assert samples['edge_gateway_local_connections_refused_total{reason="per_address"}'] > 0
    assert samples["edge_gateway_local_connections_timed_out_total"] > 0
    assert gw.terminate() == 0
    assert "Too many open files" not in gw.log_text()
    assert "out of system resource" not in gw.log_text()


async def test_a_thousand_sockets_from_many_addresses_leave_descriptors_for_the_port(
    tmp_path: Path, gateway_process: GatewayProcess
) -> None:
    gw = gateway_process
    gw.fd_limit = FD_LIMIT
    # Only the descriptor limit bounds these peers, and they stay until the test ends.
    gw.local_extra = {
        "max_connections_per_address": 5000,
        "header_timeout": "5m",
        "keepalive_timeout": "1h",
    }
    sources = [f"127.0.0.{n}" for n in range(2, 22)]
    async with PtyDevice("counter", tmp_path / "dev-a", rate=50) as dev:
        gw.devices = [DeviceSpec("dev-a", dev.link)]
        gw.start()
        await gw.wait_healthy()
        async with hostile_peers(gw.local_port, sources, idle=25, slow=25) as peers:
            await peers.wait(lambda s: "attempted" in s, "every hostile connection attempted")
            # The newest connection (this one) takes the place of the one idle longest.
            await gw.wait_healthy()
            await replug_and_read(gw, dev)
            samples = await metrics(gw)
            # The peers were still holding every slot they could while the port reopened.
            assert peers.state["open"] > 0
    limit = samples["edge_gateway_local_connections_limit"]
    assert limit < FD_LIMIT - 64
    assert samples["edge_gateway_local_connections"] <= limit
    assert samples["edge_gateway_local_connections_evicted_total"] > 0
    assert samples["process_open_fds"] < FD_LIMIT
    assert gw.terminate() == 0
    assert "Too many open files" not in gw.log_text()
    assert "out of system resource" not in gw.log_text()
