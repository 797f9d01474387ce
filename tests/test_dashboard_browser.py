"""The dashboard in a real headless Chromium, against a gateway fed by simulated serial devices."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, ViewportSize, async_playwright
from playwright.async_api import Error as PlaywrightError

from drivers.serial_line.settings import SerialLineSettings
from drivers.serial_line.transport import SerialLineDriver
from gateway.interfaces import GatewayView
from gateway.local import create_app, serve
from gateway.local.keys import HUB
from gateway.settings import (
    GatewaySettings,
    LocalSettings,
    Settings,
    StoreSettings,
)
from gateway.store import Store
from simulators.pty_device import PtyDevice
from tests.support.common import free_port, wait_until
from tests.support.local import TOKEN, FakeUplink, local_settings
from tests.support.sim import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = ViewportSize(width=390, height=844)
DESKTOP = ViewportSize(width=1280, height=800)


@dataclass
class RunningGateway:
    url: str
    server: TestServer
    uplink: FakeUplink


@asynccontextmanager
async def simulated_gateway(
    tmp_path: Path, local: LocalSettings | None = None
) -> AsyncIterator[GatewayView]:
    """Two simulated devices on pseudo-terminals, read by the serial driver into a real store."""
    devices = (
        SerialLineSettings(
            id="thermo-1",
            port=str(tmp_path / "thermo-1"),
            units={"t": "°C", "h": "%"},
            expected_interval=0.5,
        ),
        SerialLineSettings(id="counter-1", port=str(tmp_path / "counter-1")),
    )
    settings = Settings(
        gateway=GatewaySettings(id="gw-field-7", data_dir=tmp_path),
        devices=devices,
        local=local or local_settings(),
    )
    store = await Store.open(tmp_path / "readings.db", StoreSettings())
    drivers = {d.id: SerialLineDriver(d, store) for d in devices}
    uplink = FakeUplink("mqtt")
    uplink.status.state, uplink.status.connected_since = "connected", time.time()
    view = GatewayView(
        settings=settings, log=store, devices=drivers, uplinks={"mqtt": uplink}, started=time.time()
    )
    try:
        async with (
            PtyDevice("thermo", tmp_path / "thermo-1", rate=4, seed=7),
            # A line of binary garbage now and then: a dead letter for the dashboard to show.
            PtyDevice("counter", tmp_path / "counter-1", rate=10, garbage_every=10),
            asyncio.TaskGroup() as tasks,
        ):
            readers = [tasks.create_task(d.run(), name=f"driver:{i}") for i, d in drivers.items()]
            try:
                yield view
            finally:
                for reader in readers:
                    reader.cancel()
    finally:
        await store.close()


@asynccontextmanager
async def served_gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with simulated_gateway(tmp_path) as view:
        server = TestServer(create_app(view), host="127.0.0.1")
        await server.start_server()
        uplink = view.uplinks["mqtt"]
        assert isinstance(uplink, FakeUplink)
        try:
            yield RunningGateway(f"http://127.0.0.1:{server.port}/", server, uplink)
        finally:
            await server.close()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def tile_value(page: Page, device: str, sensor: str) -> str:
    selector = f'.tile[data-device="{device}"][data-sensor="{sensor}"] .number'
    return await page.locator(selector).inner_text()


async def sign_in(page: Page, url: str) -> None:
    await page.goto(url)
    await page.locator("#login").wait_for(state="visible")
    # A wrong token is refused and asked for again.
    await page.fill("#token-input", "not-the-token")
    await page.click("#login-form button[type=submit]")
    error = page.locator("#login-error")
    await page.wait_for_function("() => document.getElementById('login-error').textContent")
    assert "refused" in await error.inner_text()
    assert await page.evaluate("localStorage.length") == 0
    await page.fill("#token-input", TOKEN)
    await page.click("#login-form button[type=submit]")
    await page.locator("#login").wait_for(state="hidden")


async def test_dashboard_shows_live_values_status_and_a_link_down_banner(tmp_path: Path) -> None:
    async with served_gateway(tmp_path) as gw, chromium() as browser:
        phone = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
        page = await phone.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        await sign_in(page, gw.url)
        counter = page.locator('.tile[data-device="counter-1"][data-sensor="n"] .number')
        await counter.wait_for()
        await page.wait_for_function(
            "() => /^\\d+$/.test(document.querySelector("
            '\'.tile[data-device="counter-1"][data-sensor="n"] .number\').textContent)'
        )
        first = await counter.inner_text()
        await page.wait_for_function(
            "(first) => document.querySelector("
            '\'.tile[data-device="counter-1"][data-sensor="n"] .number\').textContent !== first',
            arg=first,
        )
        assert int(await counter.inner_text()) > int(first)
        assert (
            await page.locator('.tile[data-device="thermo-1"][data-sensor="t"] .unit').inner_text()
            == "°C"
        )
        await page.wait_for_function(
            "() => document.getElementById('st-seq').textContent !== '\u2013'"
        )
        assert await page.locator("#st-uplinks").inner_text() == "mqtt: connected"
        assert await page.locator("#link").inner_text() == "live"
        assert await page.locator("#banner").is_hidden()
        # The chart draws the last minutes.
        await page.wait_for_function(
            "() => document.querySelector('.tile[data-device=\"counter-1\"] polyline')"
            ".getAttribute('points').split(' ').length > 3"
        )
        phone_shot = tmp_path / "dashboard-phone.png"
        await page.screenshot(path=phone_shot, full_page=True)

        # The link to the cloud goes down: a banner says so.
        gw.uplink.status.state, gw.uplink.status.disconnected_since = "backoff", time.time()
        banner = page.locator("#banner")
        await banner.wait_for(state="visible")
        assert "Link to the cloud is down" in await banner.inner_text()
        await page.screenshot(path=tmp_path / "dashboard-phone-link-down.png", full_page=True)

        # The token is kept in the browser: with the same storage, the page signs in by itself.
        kept = await phone.storage_state()
        desktop = await (await browser.new_context(viewport=DESKTOP, storage_state=kept)).new_page()
        await desktop.goto(gw.url)
        await desktop.locator('.tile[data-device="thermo-1"][data-sensor="h"]').wait_for()
        assert await desktop.locator("#login").is_hidden()
        desktop_shot = tmp_path / "dashboard-desktop.png"
        await desktop.screenshot(path=desktop_shot, full_page=True)
        assert errors == []
        print(f"screenshots: {phone_shot} {desktop_shot}")


async def test_dashboard_reconnects_and_fills_the_gap(tmp_path: Path) -> None:
    async with served_gateway(tmp_path) as gw, chromium() as browser:
        page = await browser.new_page(viewport=DESKTOP)
        # Signed in by a link carrying the token in its fragment, as the demo prints it.
        await page.goto(f"{gw.url}#token={TOKEN}")
        assert await page.locator("#login").is_hidden()
        assert "#" not in page.url
        await page.wait_for_function("() => state.streamUp && state.lastSeq > 0")
        hub = gw.server.app[HUB]

        # A network blip: the server drops every stream; the counter keeps counting.
        await hub.close_all()
        await page.wait_for_function("() => !state.streamUp")
        seq_at_blip = await page.evaluate("state.lastSeq")
        await page.wait_for_function(
            "(seq) => state.streamUp && state.lastSeq > seq + 20", arg=seq_at_blip
        )
        values = await page.evaluate(
            "state.series.get('counter-1\\u0000n').points.map((p) => p.value)"
        )
        assert values == list(range(values[0], values[0] + len(values)))
        await wait_until(lambda: hub.counters.clients == 1)

        # The gateway goes away altogether: the page says so plainly.
        await gw.server.close()
        banner = page.locator("#banner")
        await banner.wait_for(state="visible", timeout=20_000)
        assert "Gateway unreachable" in await banner.inner_text()
        await page.screenshot(path=tmp_path / "dashboard-gateway-down.png")


async def test_dashboard_works_over_https_with_a_secure_websocket(tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "local.crt", tmp_path / "local.key"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    port = free_port()
    local = local_settings(listen=f"127.0.0.1:{port}", cert_file=cert, key_file=key)
    async with simulated_gateway(tmp_path, local) as view, chromium() as browser:
        server = asyncio.create_task(serve(view))
        try:
            context = await browser.new_context(viewport=PHONE, ignore_https_errors=True)
            page = await context.new_page()
            url = f"https://127.0.0.1:{port}/"
            # The page is served once the server listens; until then the browser gets refused.
            await wait_until(lambda: _loads(page, url), timeout=20)
            await page.locator("#login").wait_for(state="visible")
            await page.fill("#token-input", TOKEN)
            await page.click("#login-form button[type=submit]")
            await page.wait_for_function("() => state.streamUp && state.lastSeq > 0")
            assert await page.evaluate("state.socket.url.startsWith('wss://')")
            await page.locator('.tile[data-device="counter-1"][data-sensor="n"] .number').wait_for()
        finally:
            server.cancel()
            with pytest.raises(asyncio.CancelledError):
                await server


async def _loads(page: Page, url: str) -> bool:
    try:
        response = await page.goto(url)
    except PlaywrightError:
        return False
    return response is not None and response.ok


async def test_dashboard_shows_dead_letters_with_their_raw_bytes(tmp_path: Path) -> None:
    async with served_gateway(tmp_path) as gw, chromium() as browser:
        page = await browser.new_page(viewport=DESKTOP)
        await page.goto(f"{gw.url}#token={TOKEN}")
        row = page.locator("#dead-list tr").first
        await row.wait_for(timeout=20_000)
        cells = await row.locator("td").all_inner_texts()
        assert cells[1] == "counter-1"
        # The simulator's garbage: a NUL first, then a byte that is never UTF-8.
        assert cells[3].startswith("00 ")
        assert cells[4].startswith("\\x00")
        assert await page.locator("#dead-empty").is_hidden()
        await page.select_option("#dead-device", "thermo-1")
        await page.locator("#dead-empty").wait_for(state="visible")
        assert await page.locator("#dead-list tr").count() == 0


@asynccontextmanager
async def demo(tmp_path: Path) -> AsyncIterator[str]:
    """`edge-gateway demo --offline` as a user runs it; yields the dashboard link it prints."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--dir",
        str(tmp_path / "demo"),
        "--port",
        "0",
        "--offline",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while (line := await proc.stdout.readline()) and b"dashboard:" not in line:
                pass
        assert line, "the demo ended before printing its dashboard link"
        yield line.decode().split("dashboard:", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err


async def test_demo_dashboard_shows_meter_gps_history_and_commands(tmp_path: Path) -> None:
    async with demo(tmp_path) as url, chromium() as browser:
        page = await browser.new_page(viewport=DESKTOP)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url)
        # The Modbus energy meter's registers, with their units.
        for sensor, unit in (("voltage", "V"), ("current", "A"), ("power", "W"), ("energy", "Wh")):
            tile = page.locator(f'.tile[data-device="meter-1"][data-sensor="{sensor}"]')
            await tile.locator(".number").wait_for(timeout=20_000)
            assert await tile.locator(".unit").inner_text() == unit
        # The GPS: a position readout and its track, drawn by the page itself.
        card = page.locator('.position[data-device="gps-1"]')
        await card.wait_for(timeout=20_000)
        assert re.fullmatch(
            r"\d+\.\d{5}° N, \d+\.\d{5}° E", await card.locator(".readout").inner_text()
        )
        await page.wait_for_function(
            "() => document.querySelector('.position .track').getAttribute('points')"
            ".split(' ').length >= 3",
            timeout=20_000,
        )

        # History of the voltage from the log, then zoomed in by a drag across the chart.
        await page.click('.tile[data-device="meter-1"][data-sensor="voltage"]')
        await page.wait_for_function("() => state.history && state.history.data", timeout=20_000)
        assert await page.locator("#history-title").inner_text() == "voltage · meter-1"
        assert await page.locator("#history-mean").get_attribute("points")
        assert "readings in" in await page.locator("#history-info").inner_text()
        await page.click('#history [data-window="1d"]')
        await page.wait_for_function(
            "() => state.history.data.to - state.history.data.from > 80000"
        )
        box = await page.locator("#history-chart").bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        # The last tenth of the day, up to now (past the right edge counts as the edge).
        await page.mouse.move(box["x"] + box["width"] * 0.9, y)
        await page.mouse.down()
        await page.mouse.move(box["x"] + box["width"] + 20, y, steps=4)
        await page.mouse.up()
        await page.wait_for_function(
            "() => state.history.zoom.length === 1 && state.history.data"
            " && state.history.data.to - state.history.data.from < 20000"
            " && state.history.data.buckets.length > 0"
        )
        assert await page.locator("#history-mean").get_attribute("points")
        assert await page.locator("#history-out").is_enabled()

        # A write to the meter's setpoint, confirmed by the slave; one out of range refused.
        await page.locator("#commands").wait_for()
        await page.select_option("#cmd-name", "device.write")
        await page.fill("#cmd-value", "42.5")
        await page.click("#cmd-send")
        result = page.locator("#cmd-result.ok")
        await result.wait_for(timeout=20_000)
        assert await result.inner_text() == "meter-1 confirmed setpoint = 42.5"
        await page.wait_for_function(
            "() => document.querySelector("
            '\'.tile[data-device="meter-1"][data-sensor="setpoint"] .number\')'
            "?.textContent === '42.50'",
            timeout=20_000,
        )
        await page.fill("#cmd-value", "500")
        await page.click("#cmd-send")
        refused = page.locator("#cmd-result.failed")
        await refused.wait_for(timeout=20_000)
        assert "refused" in await refused.inner_text()
        await page.screenshot(path=tmp_path / "dashboard-demo.png", full_page=True)
        assert errors == []
