"""A technician switches an output through the local API: the whole gateway in this
process on gpiozero's mock pins (see tests/test_gpio_output.py), ``device.write`` and
``device.read`` sent with the token to its real aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import gpiozero
import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.config import parse_config
from tests.support.common import free_port, wait_until
from tests.support.drivers import wait_open
from tests.support.gateway_proc import TOKEN


async def test_device_write_switches_the_pin_and_stores_its_new_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = MockFactory()
    # The default factory, which the gateway's own driver (pin_factory=None) uses.
    monkeypatch.setattr(gpiozero.Device, "pin_factory", factory)
    port = free_port()
    settings = parse_config(
        {
            "gateway": {"id": "gw-out", "data_dir": str(tmp_path / "data")},
            "devices": [{"id": "pump", "driver": "gpio_output", "pin": 23}],
            "local": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
            "commands": {
                "allow": ["device.write", "device.read"],
                "writes": [{"device": "pump", "sensor": "state", "min": 0, "max": 1}],
            },
        },
        None,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run())
    try:
        await wait_until(lambda: "pump" in gateway.drivers, message="the driver started")
        await wait_open(gateway.drivers["pump"])
        pin = factory.pin("GPIO23")
        assert pin.state is False
        async with aiohttp.ClientSession(headers=headers) as session:

            async def listening() -> bool:
                try:
                    async with session.get(f"{base}/status") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(listening, message="the local API listening")

            async def command(name: str, request_id: str, args: dict[str, Any]) -> Any:
                body = {"id": request_id, "args": args}
                async with session.post(f"{base}/commands/{name}", json=body) as resp:
                    return await resp.json()

            def stored(expected: list[int]) -> Callable[[], Awaitable[bool]]:
                async def holds() -> bool:
                    query = {"device": "pump", "sensor": "state"}
                    async with session.get(f"{base}/readings", params=query) as resp:
                        assert resp.status == 200
                        readings = (await resp.json())["readings"]
                    return [r["value"] for r in readings] == expected

                return holds

            on = await command(
                "device.write", "on", {"device": "pump", "sensor": "state", "value": 1}
            )
            assert on == {
                "id": "on",
                "ok": True,
                "result": {"device": "pump", "sensor": "state", "value": 1, "confirmed": 1},
            }
            # The answer came after the pin was set and read back.
            assert pin.state is True
            await wait_until(stored([0, 1]), message="the new state stored")
            read = await command("device.read", "r", {"device": "pump"})
            assert read["result"] == {"device": "pump", "values": {"state": 1}}

            # Refused by the driver: a clear error, the pin as it was.
            half = await command(
                "device.write", "half", {"device": "pump", "sensor": "state", "value": 0.5}
            )
            assert half == {
                "id": "half",
                "ok": False,
                "error": "pump: state: must be 0 or 1 (not a pwm output)",
            }
            off = await command(
                "device.write", "off", {"device": "pump", "sensor": "state", "value": 0}
            )
            assert off["result"]["confirmed"] == 0
            assert pin.state is False
            await wait_until(stored([0, 1, 0]), message="the off state stored")
        gateway.request_stop()
        assert await asyncio.wait_for(task, timeout=30) == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
