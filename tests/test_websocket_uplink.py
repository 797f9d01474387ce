"""The WebSocket uplink in-process against the reference ingest server (real SQLite), and
against a server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.cloud.ingest_server import IngestSettings
from gateway.interfaces import Resender
from gateway.reading import Sample
from gateway.settings import DeviceSettings, WebSocketSettings
from gateway.store import Store
from gateway.uplinks.route import PriorityRules, Selection
from gateway.uplinks.websocket import WebSocketUplink
from gateway.uplinks.ws_protocol import SUBPROTOCOL, ack, welcome
from tests.support.common import free_port, wait_until
from tests.support.config import parse, problems, write
from tests.support.ingest import INGEST_TOKEN, ingest_metrics, served, ws_url
from tests.support.landing import landed_bodies, landed_in_arrival_order
from tests.support.mosquitto import TlsFiles
from tests.support.mqtt_uplink import GATEWAY, put, running, stored_payloads


def ws_settings(url: str, **options: Any) -> WebSocketSettings:
    base = WebSocketSettings(
        url=url,
        token=INGEST_TOKEN,
        reconnect_min=0.05,
        reconnect_max=0.5,
        heartbeat=2.0,
        ack_interval=0.0,
        batch_max=100,
        max_inflight=4,
    )
    return replace(base, **options)


@pytest.fixture
def ingest_settings(tmp_path: Path) -> IngestSettings:
    return IngestSettings(
        "127.0.0.1", free_port(), f"sqlite://{tmp_path / 'landing.db'}", token=INGEST_TOKEN
    )


async def assert_landed_as_stored(store: Store, db_url: str) -> None:
    """Every stored reading landed once, with exactly its stored content."""
    stored = await stored_payloads(store)
    landed = {seq: json.loads(body) for seq, body in (await landed_bodies(db_url, GATEWAY)).items()}
    assert landed == stored


async def test_delivers_every_reading_and_moves_the_cursor_on_acks(
    store: Store, ingest_settings: IngestSettings
) -> None:
    last = await put(store, 450, devices=("a", "b"))
    async with served(ingest_settings):
        uplink = WebSocketUplink(ws_settings(ws_url(ingest_settings.port)), GATEWAY, store)
        async with running(uplink):
            await wait_until(lambda: uplink.status.acked_seq == last, message="all acked")
            # Live readings after the backlog go the same way.
            last = await put(store, 30)
            await wait_until(lambda: uplink.status.acked_seq == last, message="live acked")
            assert uplink.status.published_readings == last
            assert uplink.status.published_messages >= 5  # batches of at most 100
        metrics = await ingest_metrics(ingest_settings.port)
    assert uplink.status.state == "stopped"
    assert metrics["readings_landed"] == last
    assert metrics["readings_duplicate"] == 0
    await assert_landed_as_stored(store, ingest_settings.db_url)


async def test_a_new_uplink_started_now_carries_only_its_devices_from_then_on(
    store: Store, ingest_settings: IngestSettings
) -> None:
    backlog = await put(store, 50)
    uplink = WebSocketUplink(
        ws_settings(ws_url(ingest_settings.port)),
        GATEWAY,
        store,
        selection=Selection(("a",), PriorityRules()),
        start="now",
    )
    async with served(ingest_settings), running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == backlog, message="started now")
        last = await put(store, 40, devices=("a", "b"))
        # The last reading is b's: passed over, the cursor still reaches it.
        await wait_until(lambda: uplink.status.acked_seq == last, message="all acked")
    landed = await landed_bodies(ingest_settings.db_url, GATEWAY)
    assert set(landed) == set(range(backlog + 1, last + 1, 2))
    assert {json.loads(body)["device"] for body in landed.values()} == {"a"}


async def test_resend_delivers_a_range_again_without_moving_the_cursor(
    store: Store, ingest_settings: IngestSettings
) -> None:
    last = await put(store, 100)
    uplink = WebSocketUplink(ws_settings(ws_url(ingest_settings.port)), GATEWAY, store)
    assert isinstance(uplink, Resender)
    async with served(ingest_settings), running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == last, message="all acked")
        assert await uplink.resend(10, 40) == 31
        metrics = await ingest_metrics(ingest_settings.port)
        assert (uplink.status.acked_seq, uplink.status.resent) == (last, 31)
        assert uplink.status.state == "connected"
    assert (metrics["readings_landed"], metrics["readings_duplicate"]) == (100, 31)
    await assert_landed_as_stored(store, ingest_settings.db_url)


async def test_a_restarted_server_gets_everything_after_the_cursor_again(
    store: Store, ingest_settings: IngestSettings
) -> None:
    uplink = WebSocketUplink(ws_settings(ws_url(ingest_settings.port)), GATEWAY, store)
    async with running(uplink):
        async with served(ingest_settings):
            first = await put(store, 200)
            await wait_until(lambda: uplink.status.acked_seq == first, message="first acked")
        # The server is gone: readings wait in the log, the uplink backs off.
        last = await put(store, 300)
        await wait_until(lambda: uplink.status.state != "connected", message="loss noticed")
        assert uplink.status.acked_seq == first
        async with served(ingest_settings):
            await wait_until(lambda: uplink.status.acked_seq == last, message="rest acked")
    await assert_landed_as_stored(store, ingest_settings.db_url)


async def test_mutual_tls_with_compression(
    store: Store, tls_files: TlsFiles, ingest_settings: IngestSettings
) -> None:
    settings = replace(
        ingest_settings,
        token=None,
        tls_cert=tls_files.server_cert,
        tls_key=tls_files.server_key,
        client_ca=tls_files.ca,
    )
    last = await put(store, 300)
    url = ws_url(settings.port, tls=True)
    client = ws_settings(url, token=None, ca_file=tls_files.ca, compress=True)
    async with served(settings):
        # Without a client certificate the TLS handshake is refused, and said so.
        refused = WebSocketUplink(client, GATEWAY, store, name="no-cert")
        async with running(refused):
            await wait_until(lambda: refused.status.errors > 0, message="refusal recorded")
        assert refused.status.acked_seq == 0
        with_cert = replace(client, cert_file=tls_files.client_cert, key_file=tls_files.client_key)
        uplink = WebSocketUplink(with_cert, GATEWAY, store)
        async with running(uplink):
            await wait_until(lambda: uplink.status.acked_seq == last, message="acked over wss")
    await assert_landed_as_stored(store, settings.db_url)


async def test_a_wrong_token_is_a_rejection_and_nothing_moves(
    store: Store, ingest_settings: IngestSettings
) -> None:
    await put(store, 10)
    async with served(ingest_settings):
        settings = ws_settings(ws_url(ingest_settings.port), token="not-the-token-at-all")
        uplink = WebSocketUplink(settings, GATEWAY, store)
        async with running(uplink):
            await wait_until(lambda: uplink.status.errors > 0, message="refusal recorded")
            assert "401" in (uplink.status.last_error or "")
            assert uplink.status.acked_seq == 0
        assert (await ingest_metrics(ingest_settings.port))["refused_auth"] >= 1


class SilentServer:
    """Welcomes the gateway, records each batch's range, and acks only when told to."""

    def __init__(self) -> None:
        self.port = free_port()
        self.ranges: list[list[tuple[int, int]]] = []  # per connection
        self.connections = 0
        self.ack_with: int | None = None  # an ack to send after each batch, right or wrong

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        self.connections += 1
        ranges: list[tuple[int, int]] = []
        self.ranges.append(ranges)
        await ws.receive()  # hello
        await ws.send_str(welcome(1 << 20, 64))
        async for msg in ws:
            batch = json.loads(msg.data)
            ranges.append((batch["first_seq"], batch["last_seq"]))
            if self.ack_with is not None:
                await ws.send_str(ack(self.ack_with))
        return ws

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    app = web.Application()
    app.router.add_get("/", server.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    yield server
    await runner.cleanup()


async def test_in_flight_is_bounded_and_an_unacked_link_is_dropped(
    store: Store, silent_server: SilentServer
) -> None:
    await put(store, 1000)
    # Pings answered: only the missing acks end each connection.
    settings = ws_settings(
        silent_server.url, max_inflight=3, batch_max=50, ack_timeout=1.0, heartbeat=60.0
    )
    uplink = WebSocketUplink(settings, GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: silent_server.connections >= 2, message="reconnect after timeout")
        await wait_until(lambda: len(silent_server.ranges[0]) == 3, message="window sent")
        assert "no ack" in (uplink.status.last_error or "")
    # Each connection sent at most three batches and waited; each started at the cursor.
    for ranges in silent_server.ranges:
        assert ranges == [(1, 50), (51, 100), (101, 150)][: len(ranges)]
    assert uplink.status.acked_seq == 0


async def test_an_ack_that_ends_no_batch_drops_the_connection(
    store: Store, silent_server: SilentServer
) -> None:
    await put(store, 100)
    silent_server.ack_with = 7  # inside the first batch, not its end
    uplink = WebSocketUplink(ws_settings(silent_server.url, batch_max=50), GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: "bad ack" in (uplink.status.last_error or ""), message="bad ack")
        await asyncio.sleep(0)
    assert uplink.status.acked_seq == 0


def test_a_websocket_uplink_table_is_checked_key_by_key(tmp_path: Path) -> None:
    base = '[gateway]\nid = "gw"\n[[uplinks]]\nname = "ingest"\ntype = "websocket"\n'
    text = base + 'url = "wss://cloud.example/ingest"\ncompress = true\ndevices = ["t-*"]\n'
    (entry,) = parse(tmp_path, text + "best_effort = true\n").all_uplinks()
    assert entry.transport == WebSocketSettings(url="wss://cloud.example/ingest", compress=True)
    assert (entry.name, entry.type, entry.devices, entry.best_effort) == (
        "ingest",
        "websocket",
        ("t-*",),
        True,
    )
    found = problems(
        tmp_path,
        base + 'url = "http://cloud"\ntoken = "short"\nmax_inflight = 0\nheartbeat = "soon"\n',
    )
    assert [p.split(":")[0] for p in found] == [
        "uplinks[0].url",
        "uplinks[0].token",
        "uplinks[0].max_inflight",
        "uplinks[0].heartbeat",
    ]
    ca = write(tmp_path, "not a certificate", "ca.pem")
    found = problems(tmp_path, base + f'url = "ws://cloud/ingest"\nca_file = "{ca}"\n')
    assert found == ['uplinks[0].ca_file: only used with "wss://" urls']


def test_the_former_websocket_section_points_to_uplinks(tmp_path: Path) -> None:
    found = problems(tmp_path, '[gateway]\nid = "gw"\n[uplink.websocket]\nurl = "ws://h/i"\n')
    assert found == [
        'uplink.websocket: a WebSocket uplink is an [[uplinks]] table with type = "websocket"'
    ]


async def test_a_high_priority_reading_lands_before_the_backlog_drains(
    store: Store, ingest_settings: IngestSettings
) -> None:
    rules = PriorityRules.of(
        [
            DeviceSettings(id="door", driver="serial_line", priority="high"),
            DeviceSettings(id="plc", driver="serial_line", sensor_priority={"trip": "high"}),
        ]
    )
    # Small batches and window make the drain long, so that the order shows.
    settings = ws_settings(ws_url(ingest_settings.port), batch_max=50, max_inflight=4)
    uplink = WebSocketUplink(settings, GATEWAY, store, selection=Selection(("*",), rules))
    backlog = 2000
    async with running(uplink):
        # The server is away while the backlog builds (a normal device, and the plc's
        # normal sensor), then the alarms come.
        await wait_until(lambda: uplink.status.state == "backoff", message="uplink down")
        now = time.time()
        store.put_samples(
            [Sample("meter" if i % 2 else "plc", "load", i, now) for i in range(backlog)]
        )
        store.put_samples([Sample("door", "open", 1, now), Sample("plc", "trip", 1, now)])
        last = await store.flush()

        async def priority_cursor_at(seq: int) -> bool:
            return (await store.consumers()).get("websocket:priority") == seq

        # Still down, the priority lane passed over the backlog: its stream's hello
        # starts at the alarms.
        await wait_until(lambda: priority_cursor_at(backlog), message="priority lane scouted")
        async with served(ingest_settings):
            await wait_until(lambda: uplink.status.acked_seq == last, 60, message="all acked")
            metrics = await ingest_metrics(ingest_settings.port)
    arrival = await landed_in_arrival_order(ingest_settings.db_url, GATEWAY)
    door, trip = last - 1, last
    assert arrival.index(door) < arrival.index(backlog)
    assert arrival.index(trip) < arrival.index(backlog)
    # Every seq landed exactly once, as stored; both cursors moved.
    assert metrics["readings_landed"] == last
    assert metrics["readings_duplicate"] == 0
    await assert_landed_as_stored(store, ingest_settings.db_url)
    assert await store.consumers() == {"websocket": last, "websocket:priority": last}
