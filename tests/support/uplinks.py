"""A gateway in-process with several uplinks and no device: readings are put into its
store by the test (tests of several uplinks, of the consumer's resend recovery)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.config import parse_config
from gateway.store import Store
from tests.support.common import wait_until
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_uplink import GATEWAY

FAST = {"reconnect_min": 0.05, "reconnect_max": 0.5, "keepalive": 5, "ack_interval": 0.05}


def uplink(name: str, broker: Mosquitto, **keys: Any) -> dict[str, Any]:
    return {"name": name, "type": "mqtt", "url": broker.url, **FAST, **keys}


@contextlib.asynccontextmanager
async def gateway_running(
    tmp_path: Path, uplinks: list[dict[str, Any]], **more: Any
) -> AsyncIterator[Gateway]:
    """An in-process gateway with no device (readings are put into its store) whose
    store deletes what every uplink has as soon as it has it."""
    config = {
        "gateway": {"id": GATEWAY, "data_dir": str(tmp_path / "data")},
        "store": {"durability": "normal", "history": 0},
        "uplinks": uplinks,
        **more,
    }
    gateway = Gateway(parse_config(config, None))
    task = asyncio.create_task(gateway.run())
    try:
        await wait_until(lambda: len(gateway.uplinks) == len(uplinks), message="uplinks up")
        yield gateway
    finally:
        gateway.request_stop()
        await task


def store_of(gateway: Gateway) -> Store:
    assert gateway.store is not None
    return gateway.store
