"""The whole gateway, as a process, meets a damaged page in the middle of its log.

It keeps running, moves the file aside, says so in /healthz, /metrics and one log
line, and delivery to the broker resumes by itself with seqs above the old ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp

from gateway.store import schema
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.store_damage import damage_page, readings_leaves


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


async def test_a_running_gateway_moves_a_damaged_log_aside_and_delivery_resumes(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    gateway_process: GatewayProcess,
) -> None:
    subscriber = subscriber_factory(mosquitto, "edge/+/+/telemetry")
    gw = gateway_process
    async with PtyDevice("counter", tmp_path / "dev-a", rate=1000) as dev:
        gw.devices = [DeviceSpec("dev-a", dev.link)]
        gw.mqtt_url = mosquitto.url
        gw.start()
        await gw.wait_healthy()
        await wait_until(lambda: len(subscriber.seqs()) >= 3000, timeout=30, message="delivery")
        assert gw.terminate() == 0
        before = max(subscriber.seqs())
        db = gw.data_dir / schema.DB_NAME
        leaves = readings_leaves(db)
        damage_page(db, leaves[len(leaves) // 2])

        gw.start()
        await gw.wait_healthy()

        async def says_moved_aside() -> bool:
            text = await get_text(f"{gw.base_url}/healthz")
            return "moved aside" in text

        await wait_until(says_moved_aside, timeout=30, message="/healthz says so")
        metrics = await get_text(f"{gw.base_url}/metrics")
        assert "edge_gateway_store_moved_aside_total 1" in metrics.splitlines()
        # Delivery resumes on the fresh log, above every seq handed out before.
        await wait_until(
            lambda: max(subscriber.seqs()) > before + 500, timeout=30, message="new deliveries"
        )
        assert gw.proc is not None
        assert gw.proc.poll() is None  # no restart was needed
        assert gw.terminate() == 0
    assert len(schema.moved_aside(db)) == 1
    lines = [line for line in gw.log_text().splitlines() if "moved it aside" in line]
    assert len(lines) == 1, lines
