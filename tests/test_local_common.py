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
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.interfaces import CommitListener, DeviceStatus, GatewayView, StoreStats, UplinkStatus
from gateway.local import create_app
from gateway.reading import DeadLetter, Sample, StoredReading, encode
from gateway.settings import DeviceSettings, GatewaySettings, LocalSettings, Settings

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


class MemoryLog:
    """In-memory reading log with the store's commit semantics (commit on the next loop turn)."""

    def __init__(self) -> None:
        self.readings: list[StoredReading] = []
        self._pending: list[Sample] = []
        self._listeners: list[CommitListener] = []
        self._committed = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return self.readings[-1].seq if self.readings else 0

    def put_samples(self, samples: Sequence[Sample]) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._commit)
        self._pending.extend(samples)

    def put_dead_letter(self, dead_letter: DeadLetter) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        batch = []
        for sample in self._pending:
            seq = self.last_seq + 1
            batch.append(StoredReading(seq, sample.device, encode(seq, sample)))
            self.readings.append(batch[-1])
        self._pending.clear()
        for listener in list(self._listeners):
            listener(batch)
        self._committed.set()

    async def flush(self) -> int:
        while self._pending:
            self._committed.clear()
            await self._committed.wait()
        return self.last_seq

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: CommitListener) -> None:
        self._listeners.remove(listener)

    async def wait_beyond(self, seq: int) -> int:
        raise NotImplementedError

    async def read_after(
        self, seq: int, limit: int, device_glob: str | None = None
    ) -> list[StoredReading]:
        await asyncio.sleep(0)
        out = [
            r
            for r in self.readings
            if r.seq > seq and (device_glob is None or fnmatchcase(r.device, device_glob))
        ]
        return out[:limit]

    async def register_consumer(self, name: str) -> int:
        raise NotImplementedError

    async def ack(self, name: str, seq: int) -> None:
        raise NotImplementedError

    def stats(self) -> StoreStats:
        return StoreStats(
            depth=len(self.readings),
            bytes=0,
            last_seq=self.last_seq,
            dropped=0,
            dead_letters=0,
            oldest_unsent_ts=None,
            degraded=None,
            commits=0,
            committed_readings=len(self.readings),
            commit_seconds=0.0,
        )

    async def close(self) -> None:
        await self.flush()


@dataclass
class LocalGateway:
    """A served gateway view: the store behind it and how to reach it."""

    view: GatewayView
    store: MemoryLog
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
    store = MemoryLog()
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
