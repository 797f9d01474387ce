"""A driver that refuses a read or a write: its DriverError is the command's error, as
the device gave it, not an internal error."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.commands.builtins import builtin_handlers
from gateway.commands.journal import AnswerJournal
from gateway.commands.router import CommandRouter
from gateway.errors import DriverError
from gateway.interfaces import DeviceStatus, Driver, GatewayView
from gateway.settings import CommandSettings, Settings, WriteRule
from gateway.store import Store
from tests.support.commands import Runtime, request


class RefusingDriver:
    """Refuses at once (``read_now``, a plain method) or after asking the device
    (``write``, a coroutine)."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.status = DeviceStatus()

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def write(self, sensor: str, value: object) -> object:
        await asyncio.sleep(0)
        raise DriverError(self.device_id, f"slave 1 refused the write of {sensor}: code 2")

    def read_now(self) -> dict[str, object]:
        raise DriverError(self.device_id, "read failed: timeout")


async def test_driver_errors_become_the_commands_error(store: Store, tmp_path: Path) -> None:
    devices: dict[str, Driver] = {"meter-1": RefusingDriver("meter-1")}
    view = GatewayView(Settings(), store, devices, {}, time.time())
    settings = CommandSettings(
        allow=("device.write", "device.read"), writes=(WriteRule("meter-1", "setpoint"),)
    )
    journal = AnswerJournal(tmp_path / "c.jsonl", 60.0, 10)
    router = CommandRouter(
        settings, journal, builtin_handlers(Runtime(view), view, lambda: settings)
    )
    args = {"device": "meter-1", "sensor": "setpoint", "value": 3}
    write = await router.handle("device.write", request("w", args), via="t")
    assert write.body == {
        "id": "w",
        "ok": False,
        "error": "meter-1: slave 1 refused the write of setpoint: code 2",
    }
    read = await router.handle("device.read", request("r", {"device": "meter-1"}), via="t")
    assert read.body == {"id": "r", "ok": False, "error": "meter-1: read failed: timeout"}
    assert router.status.executed == {("device.write", "failed"): 1, ("device.read", "failed"): 1}
