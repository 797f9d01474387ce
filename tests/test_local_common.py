"""Shared set-up for the local server tests: a gateway view over a real store, served on loopback.

This module holds no tests; the local server's test modules import it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.interfaces import DeviceStatus, GatewayView, UplinkStatus
from gateway.local import create_app
from gateway.reading import Sample
from gateway.settings import (
    DeviceSettings,
    GatewaySettings,
    LocalSettings,
    Settings,
    StoreSettings,
)
from gateway.store import Store

TOKEN = "correct-horse-battery-staple"


@dataclass
class FakeDriver:
    """Carries a device's status as a running driver would."""

    device_id: str
    status: DeviceStatus = field(default_factory=DeviceStatus)

    async def run(self) -> None:
        await asyncio.Event().wait()


@dataclass
class FakeUplink:
    """Carries an uplink's status as a running uplink would."""

    name: str
    status: UplinkStatus = field(default_factory=UplinkStatus)

    async def run(self) -> None:
        await asyncio.Event().wait()


@dataclass
class LocalGateway:
    """A served gateway view: the store behind it and how to reach it."""

    view: GatewayView
    store: Store
    server: TestServer
    session: aiohttp.ClientSession
    devices: dict[str, FakeDriver]
    uplinks: dict[str, FakeUplink]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def get_json(self, path: str, **params: str | int) -> Any:
        async with self.session.get(self.url(path), headers=self.auth(), params=params) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    def put(self, device: str, sensor: str, values: Sequence[float | str]) -> None:
        now = time.time()
        samples = [Sample(device, sensor, v, now) for v in values]
        self.store.put_samples(samples)
        status = self.devices[device].status if device in self.devices else None
        if status is not None:
            status.readings += len(samples)
            status.last_reading_ts = now


def local_settings(**overrides: Any) -> LocalSettings:
    return replace(LocalSettings(token=TOKEN, heartbeat=0.0), **overrides)


@asynccontextmanager
async def local_gateway(
    tmp_path: Path,
    *,
    local: LocalSettings | None = None,
    device_ids: Sequence[str] = ("thermo-1", "counter-1"),
    expected_interval: float = 0.0,
    configure: Callable[[Settings], Settings] | None = None,
    send_timeout: float = 10.0,
) -> AsyncIterator[LocalGateway]:
    settings = Settings(
        gateway=GatewaySettings(id="gw-test", data_dir=tmp_path),
        devices=tuple(
            DeviceSettings(id=d, driver="serial_line", expected_interval=expected_interval)
            for d in device_ids
        ),
        local=local or local_settings(),
    )
    if configure is not None:
        settings = configure(settings)
    store = await Store.open(tmp_path / "readings.db", StoreSettings())
    devices = {d: FakeDriver(d) for d in device_ids}
    uplinks = {"mqtt": FakeUplink("mqtt")}
    view = GatewayView(
        settings=settings, log=store, devices=devices, uplinks=uplinks, started=time.time()
    )
    server = TestServer(create_app(view, send_timeout=send_timeout), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield LocalGateway(view, store, server, session, devices, uplinks)
    finally:
        await server.close()
        await store.close()


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)
