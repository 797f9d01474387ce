"""SIGHUP reloads the configuration: validated first, only what changed restarts,
the store stays open (seq keeps counting), a bad file changes nothing."""

from __future__ import annotations

import signal
from pathlib import Path

from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.gateway_proc import DeviceSpec, GatewayProcess


async def test_sighup_adds_and_removes_devices_without_closing_the_store(
    tmp_path: Path, gateway_process: GatewayProcess
) -> None:
    gw = gateway_process
    async with (
        PtyDevice("counter", tmp_path / "dev-a", rate=100) as dev_a,
        PtyDevice("counter", tmp_path / "dev-b", rate=100) as dev_b,
    ):
        gw.devices = [DeviceSpec("dev-a", dev_a.link)]
        gw.start()
        await gw.wait_healthy()

        async def a_reads() -> bool:
            return int((await gw.status())["devices"]["dev-a"]["readings"]) > 20

        await wait_until(a_reads, message="dev-a readings")

        gw.devices = [DeviceSpec("dev-b", dev_b.link)]
        gw.write_config()
        before = (await gw.status())["store"]["last_seq"]
        gw.signal(signal.SIGHUP)

        async def swapped() -> bool:
            devices = (await gw.status())["devices"]
            return "dev-a" not in devices and devices.get("dev-b", {}).get("readings", 0) > 20

        await wait_until(swapped, message="dev-b replaced dev-a")
        status = await gw.status()
        # Same process, same open log: seq went on from where it was.
        assert status["store"]["last_seq"] > before
        assert gw.proc is not None
        assert gw.proc.poll() is None
        assert gw.starts == 1
    assert gw.terminate() == 0
    assert "configuration reloaded" in gw.log_text()


async def test_sighup_with_a_bad_file_keeps_running_on_the_old_configuration(
    tmp_path: Path, gateway_process: GatewayProcess
) -> None:
    gw = gateway_process
    async with PtyDevice("counter", tmp_path / "dev-a", rate=100) as dev_a:
        gw.devices = [DeviceSpec("dev-a", dev_a.link)]
        gw.start()
        await gw.wait_healthy()
        gw.config_path.write_text(
            gw.config_path.read_text().replace("baudrate = 115200", "baudrate = 12")
        )
        gw.signal(signal.SIGHUP)
        await wait_until(lambda: "reload refused" in gw.log_text(), message="refusal logged")
        assert "devices[0].baudrate" in gw.log_text()
        before = int((await gw.status())["devices"]["dev-a"]["readings"])

        async def still_reading() -> bool:
            return int((await gw.status())["devices"]["dev-a"]["readings"]) > before + 20

        await wait_until(still_reading, message="dev-a still read after the refused reload")
    assert gw.terminate() == 0


async def test_restarting_the_local_server_keeps_a_device_named_local(
    tmp_path: Path, gateway_process: GatewayProcess
) -> None:
    gw = gateway_process
    async with PtyDevice("counter", tmp_path / "local", rate=100) as dev:
        gw.devices = [DeviceSpec("local", dev.link)]
        gw.start()
        await gw.wait_healthy()
        # Only the [local] section changes: the server restarts, the device does not.
        gw.config_path.write_text(gw.config_path.read_text() + "max_clients = 7\n")
        gw.signal(signal.SIGHUP)
        await wait_until(lambda: "configuration reloaded" in gw.log_text(), message="reload")
        await gw.wait_healthy()
        before = int((await gw.status())["devices"]["local"]["readings"])

        async def still_listed_and_reading() -> bool:
            devices = (await gw.status())["devices"]
            return "local" in devices and int(devices["local"]["readings"]) > before + 20

        await wait_until(still_listed_and_reading, message="device 'local' still in the view")
    assert gw.terminate() == 0
