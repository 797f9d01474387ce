"""The WebSocket uplink as users run it: `edge-gateway run` and `edge-gateway ingest` as
processes, a simulated device on a real pseudo-terminal, the link through a TCP proxy the
test controls, the readings landing in real SQLite or a private PostgreSQL.

The outcome that matters: after a blackholed link, kill -9 of the ingest server and
kill -9 of the gateway, all mid-stream, every committed seq is in the database exactly
once, with no gap, and with the very content the gateway stored; no copy sent again
differed from the first (the server would have logged it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest

from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.gateway_status import (
    DRAIN_TIMEOUT,
    acked_at_least,
    committed_at_least,
    drained,
    last_seq,
    uplink_state_is_not,
)
from tests.support.ingest import IngestProcess
from tests.support.landing import landed_bodies
from tests.support.tcp_proxy import TcpProxy

UPLINK = "websocket"
PHASE_READINGS = 150
CONFLICT = "came again with another content"
# A process start on a loaded machine (imports, integrity check) may take this long.
START_TIMEOUT = 60.0


@asynccontextmanager
async def device_through(
    proxy: TcpProxy, gw: GatewayProcess, ingest: IngestProcess, tmp_path: Path
) -> AsyncIterator[None]:
    """A counter device (300 lines/s) read by the gateway, its WebSocket uplink via ``proxy``."""
    async with PtyDevice("counter", tmp_path / "dev-a", rate=300) as dev:
        gw.devices = [DeviceSpec("dev-a", dev.link)]
        url = f"ws://127.0.0.1:{proxy.port}/ingest"
        websocket = {
            "url": url,
            "token": ingest.token,
            "heartbeat": 1.0,
            "ack_timeout": 5.0,
            "reconnect_min": 0.05,
            "reconnect_max": 0.5,
            "batch_max": 100,
        }
        gw.more_config = {"uplinks": [{"name": UPLINK, "type": "websocket", **websocket}]}
        gw.start()
        await gw.wait_healthy(timeout=START_TIMEOUT)
        yield


async def next_phase_acked(gw: GatewayProcess, what: str) -> None:
    """Readings committed from now on get acknowledged."""
    mark = await last_seq(gw)
    await wait_until(
        acked_at_least(gw, mark + PHASE_READINGS, UPLINK), timeout=DRAIN_TIMEOUT, message=what
    )


def stored_bodies(gw: GatewayProcess) -> dict[int, object]:
    with closing(sqlite3.connect(gw.data_dir / "readings.db")) as db:
        return {seq: json.loads(p) for seq, p in db.execute("SELECT seq, payload FROM readings")}


async def check_landed(gw: GatewayProcess, ingest: IngestProcess) -> None:
    """Drain, stop both, and compare the database with the gateway's log."""
    await wait_until(drained(gw, UPLINK), timeout=DRAIN_TIMEOUT, message="log drained")
    last = await last_seq(gw)
    assert gw.terminate() == 0
    ingest.stop()
    landed = {
        s: json.loads(b) for s, b in (await landed_bodies(ingest.db_url, gw.gateway_id)).items()
    }
    missing = set(range(1, last + 1)) - landed.keys()
    assert not missing, f"{len(missing)} readings never landed, e.g. {sorted(missing)[:10]}"
    assert landed == stored_bodies(gw)
    assert CONFLICT not in ingest.log_text()


async def faults(gw: GatewayProcess, ingest: IngestProcess, proxy: TcpProxy) -> None:
    # The route dies silently: the heartbeat notices, the link is torn down and comes back.
    proxy.blackhole()
    mark = await last_seq(gw)
    await wait_until(committed_at_least(gw, mark + PHASE_READINGS), timeout=30)
    await wait_until(
        uplink_state_is_not(gw, "connected", UPLINK), timeout=30, message="dead link noticed"
    )
    proxy.reset()
    proxy.resume()
    await next_phase_acked(gw, "acks after the blackhole")

    # The ingest server is killed mid-stream and started again on the same port.
    ingest.kill9()
    ingest.start()
    await ingest.wait_ready(timeout=START_TIMEOUT)
    await next_phase_acked(gw, "acks after kill -9 of the ingest server")

    # The gateway is killed mid-stream while the device keeps writing.
    gw.kill9()
    gw.start()
    await gw.wait_healthy(timeout=START_TIMEOUT)
    await next_phase_acked(gw, "acks after kill -9 of the gateway")


async def test_every_seq_lands_once_across_blackhole_and_kill9_of_either_side(
    tmp_path: Path,
    ingest_process: IngestProcess,
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gateway_process: GatewayProcess,
) -> None:
    ingest = ingest_process
    ingest.start()
    await ingest.wait_ready(timeout=START_TIMEOUT)
    proxy = await tcp_proxy_factory(ingest.port)
    async with device_through(proxy, gateway_process, ingest, tmp_path):
        await next_phase_acked(gateway_process, "first deliveries")
        await faults(gateway_process, ingest, proxy)
    await check_landed(gateway_process, ingest)


async def test_into_postgresql_across_kill9_of_the_ingest_server(
    tmp_path: Path,
    postgres_url: str,
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gateway_process: GatewayProcess,
) -> None:
    """The server dies with a transaction open; the soak run adds the other faults."""
    ingest = postgres_ingest(tmp_path, postgres_url)
    try:
        ingest.start()
        await ingest.wait_ready(timeout=START_TIMEOUT)
        proxy = await tcp_proxy_factory(ingest.port)
        gw = gateway_process
        async with device_through(proxy, gw, ingest, tmp_path):
            await next_phase_acked(gw, "first deliveries")
            ingest.kill9()
            ingest.start()
            await ingest.wait_ready(timeout=START_TIMEOUT)
            await next_phase_acked(gw, "acks after kill -9 of the ingest server")
        await check_landed(gw, ingest)
    finally:
        ingest.stop()


def postgres_ingest(tmp_path: Path, url: str) -> IngestProcess:
    root = tmp_path / "ingest-pg"
    root.mkdir()
    return IngestProcess(root, url)


@pytest.mark.soak
@pytest.mark.timeout(1800)  # twenty cycles, each with three process starts
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_many_fault_cycles_land_every_seq_once(
    tmp_path: Path,
    database: str,
    request: pytest.FixtureRequest,
    ingest_process: IngestProcess,
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gateway_process: GatewayProcess,
) -> None:
    ingest = ingest_process
    if database == "postgresql":
        ingest = postgres_ingest(tmp_path, request.getfixturevalue("postgres_url"))
    try:
        ingest.start()
        await ingest.wait_ready(timeout=START_TIMEOUT)
        proxy = await tcp_proxy_factory(ingest.port)
        async with device_through(proxy, gateway_process, ingest, tmp_path):
            for _ in range(20):
                await faults(gateway_process, ingest, proxy)
        await check_landed(gateway_process, ingest)
    finally:
        ingest.stop()
