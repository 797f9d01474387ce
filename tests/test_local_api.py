"""The local server's HTTP side: health, status, metrics, history, devices and the dashboard."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from gateway import __version__
from gateway.errors import ConfigError, StoreError
from gateway.interfaces import GatewayView
from gateway.local import serve
from gateway.local.latest import sensor_of
from gateway.reading import Sample, encode
from gateway.settings import GatewaySettings, Settings, StoreSettings
from gateway.store import Store
from tests.support.common import free_port, wait_until
from tests.support.local import (
    TOKEN,
    issue_server_cert,
    local_gateway,
    local_settings,
    parse_samples,
    receive_json,
)

METRIC_NAMES = [
    "edge_gateway_info",
    "edge_gateway_device_up",
    "edge_gateway_device_readings_total",
    "edge_gateway_device_errors_total",
    "edge_gateway_device_reconnects_total",
    "edge_gateway_device_pauses_total",
    "edge_gateway_device_refused_names_total",
    "edge_gateway_device_last_reading_timestamp_seconds",
    "edge_gateway_device_expected_interval_seconds",
    "edge_gateway_store_depth",
    "edge_gateway_store_bytes",
    "edge_gateway_store_last_seq",
    "edge_gateway_store_dropped_total",
    "edge_gateway_store_dead_letters_total",
    "edge_gateway_store_oldest_unsent_age_seconds",
    "edge_gateway_store_degraded",
    "edge_gateway_store_free_bytes",
    "edge_gateway_store_commits_total",
    "edge_gateway_store_committed_readings_total",
    "edge_gateway_store_commit_seconds_total",
    "edge_gateway_store_dead_letters_lost_total",
    "edge_gateway_store_moved_aside_total",
    "edge_gateway_store_moved_aside_timestamp_seconds",
    "edge_gateway_store_integrity_checks_total",
    "edge_gateway_uplink_connected",
    "edge_gateway_uplink_acked_seq",
    "edge_gateway_uplink_in_flight",
    "edge_gateway_uplink_published_messages_total",
    "edge_gateway_uplink_published_readings_total",
    "edge_gateway_uplink_errors_total",
    "edge_gateway_uplink_lost_readings_total",
    "edge_gateway_uplink_resent_readings_total",
    "edge_gateway_uplink_down_seconds",
    "edge_gateway_uplink_publish_latency_seconds",
    "edge_gateway_local_clients",
    "edge_gateway_local_gaps_total",
    "edge_gateway_local_closed_slow_total",
    "edge_gateway_local_inbound_errors_total",
    "edge_gateway_local_connections",
    "edge_gateway_local_connections_limit",
    "edge_gateway_local_connections_refused_total",
    "edge_gateway_local_connections_evicted_total",
    "edge_gateway_local_connections_timed_out_total",
    "edge_gateway_local_requests_refused_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
]


async def test_healthz_needs_no_token_and_reports_ok(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        gw.uplinks["mqtt"].status.state = "connected"
        async with gw.session.get(gw.url("/healthz")) as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ok", "gateway": "gw-test", "reasons": []}


async def test_healthz_names_every_reason_for_degraded(tmp_path: Path) -> None:
    def low_disk(settings: Settings) -> Settings:
        return replace(settings, store=StoreSettings(min_free_bytes=2**62))

    async with local_gateway(tmp_path, expected_interval=1.0, configure=low_disk) as gw:
        gw.view.started = time.time() - 1000
        mqtt = gw.uplinks["mqtt"].status
        mqtt.state, mqtt.disconnected_since = "backoff", time.time() - 400
        gw.devices["counter-1"].status.last_reading_ts = time.time()
        async with gw.session.get(gw.url("/healthz")) as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["status"] == "degraded"
    reasons = body["reasons"]
    assert len(reasons) == 3, reasons
    assert reasons[0].startswith("store: low disk space: ")
    assert reasons[1].startswith("uplink mqtt: down for 4")
    assert reasons[2].startswith("device thermo-1: silent for 10")


async def test_api_refuses_missing_and_wrong_tokens(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        for path in ("/api/v1/status", "/api/v1/readings", "/api/v1/devices"):
            async with gw.session.get(gw.url(path)) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert await resp.json() == {"error": "missing or wrong token"}
            async with gw.session.get(gw.url(path), headers=gw.auth("wrong")) as resp:
                assert resp.status == 401
            # The query token is for the WebSocket only.
            async with gw.session.get(gw.url(path), params={"token": TOKEN}) as resp:
                assert resp.status == 401
            async with gw.session.get(gw.url(path), headers=gw.auth()) as resp:
                assert resp.status == 200


async def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  from-a-file\n")
    local = local_settings(token=None, token_file=token_file)
    async with local_gateway(tmp_path, local=local) as gw:
        async with gw.session.get(gw.url("/api/v1/status"), headers=gw.auth("from-a-file")) as r:
            assert r.status == 200
        async with gw.session.get(gw.url("/api/v1/status"), headers=gw.auth()) as resp:
            assert resp.status == 401


async def test_no_configured_token_keeps_the_api_closed(tmp_path: Path) -> None:
    async with (
        local_gateway(tmp_path, local=local_settings(token=None)) as gw,
        gw.session.get(gw.url("/api/v1/status"), headers=gw.auth("")) as resp,
    ):
        assert resp.status == 401


async def test_status_has_the_contract_shape(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        gw.put("thermo-1", "t", [20.5, 21.0, 21.5])
        await gw.store.flush()
        mqtt = gw.uplinks["mqtt"].status
        mqtt.state, mqtt.acked_seq = "connected", 2
        gw.devices["thermo-1"].status.state = "open"
        body = await gw.get_json("/api/v1/status")
    assert body["gateway"] == "gw-test"
    assert body["version"] == __version__
    store = body["store"]
    assert {"depth", "bytes", "last_seq", "dropped", "dead_letters"} <= store.keys()
    assert store["last_seq"] == 3
    assert body["uplinks"]["mqtt"]["state"] == "connected"
    assert body["uplinks"]["mqtt"]["acked_seq"] == 2
    assert {"state": "open", "readings": 3, "errors": 0}.items() <= body["devices"][
        "thermo-1"
    ].items()
    assert body["devices"]["counter-1"]["state"] == "starting"
    assert body["health"]["status"] in {"ok", "degraded"}


async def test_metrics_expose_every_family(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        gw.put("thermo-1", "t", [1.0, 2.0])
        await gw.store.flush()
        gw.devices["thermo-1"].status.state = "open"
        mqtt = gw.uplinks["mqtt"].status
        mqtt.state = "connected"
        mqtt.publish_latency.observe(0.003)
        async with gw.session.get(gw.url("/metrics")) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            text = await resp.text()
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert sorted(declared) == sorted(METRIC_NAMES)
    samples = parse_samples(text)
    assert samples[f'edge_gateway_info{{gateway="gw-test",version="{__version__}"}}'] == 1
    assert samples['edge_gateway_device_up{device="thermo-1"}'] == 1
    assert samples['edge_gateway_device_up{device="counter-1"}'] == 0
    assert samples['edge_gateway_device_readings_total{device="thermo-1"}'] == 2
    assert samples["edge_gateway_store_last_seq"] == 2
    assert samples['edge_gateway_uplink_connected{uplink="mqtt"}'] == 1
    assert samples['edge_gateway_uplink_down_seconds{uplink="mqtt"}'] == 0
    assert samples['edge_gateway_uplink_publish_latency_seconds_count{uplink="mqtt"}'] == 1
    assert (
        samples['edge_gateway_uplink_publish_latency_seconds_bucket{uplink="mqtt",le="0.005"}'] == 1
    )
    assert samples["edge_gateway_store_free_bytes"] > 0
    assert samples["process_resident_memory_bytes"] > 0
    assert samples["process_open_fds"] > 0
    assert 0 < samples["process_start_time_seconds"] <= time.time()


async def test_metrics_pass_promtool_lint(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        gw.put("thermo-1", "t", [1.0])
        await gw.store.flush()
        gw.uplinks["mqtt"].status.publish_latency.observe(0.01)
        async with gw.session.get(gw.url("/metrics")) as resp:
            text = await resp.read()
    promtool = await asyncio.create_subprocess_exec(
        "promtool",
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await promtool.communicate(text)
    assert promtool.returncode == 0, output.decode()
    assert output == b""


async def test_readings_page_by_seq_and_filter(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        for i in range(50):
            gw.put("thermo-1", "t", [float(i)])
            gw.put("thermo-1", "h", [40.0 + i])
            gw.put("counter-1", "n", [i, i + 0.5])
        await gw.store.flush()

        seqs: list[int] = []
        since = 0
        while True:
            page = await gw.get_json("/api/v1/readings", since=since, limit=64)
            seqs += [r["seq"] for r in page["readings"]]
            if page["next"] is None:
                break
            since = page["next"]
        assert seqs == list(range(1, 201))

        thermo = await gw.get_json("/api/v1/readings", device="thermo-*", limit=1000)
        assert [r["device"] for r in thermo["readings"]] == ["thermo-1"] * 100
        assert thermo["next"] is None

        humidity = await gw.get_json("/api/v1/readings", sensor="h", since=100, limit=10)
        assert [r["sensor"] for r in humidity["readings"]] == ["h"] * 10
        assert humidity["readings"][0]["seq"] > 100
        assert humidity["next"] == humidity["readings"][-1]["seq"]

        for bad in ({"limit": "0"}, {"limit": "100000"}, {"since": "x"}):
            async with gw.session.get(
                gw.url("/api/v1/readings"), headers=gw.auth(), params=bad
            ) as resp:
                assert resp.status == 400
                assert "error" in await resp.json()


async def test_devices_show_the_last_reading_of_each_sensor(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        gw.put("thermo-1", "t", [20.0, 20.5])
        gw.put("thermo-1", "h", [41.0])
        gw.put("thermo-1", "t", [21.0])
        gw.devices["thermo-1"].status.reconnects = 2
        gw.devices["thermo-1"].status.pauses = 4
        await gw.store.flush()
        body = await gw.get_json("/api/v1/devices")
    by_id = {d["id"]: d for d in body["devices"]}
    thermo = by_id["thermo-1"]
    assert thermo["last"]["t"]["value"] == 21.0
    assert thermo["last"]["t"]["seq"] == 4
    assert thermo["last"]["h"]["value"] == 41.0
    assert thermo["reconnects"] == 2
    assert thermo["pauses"] == 4
    assert thermo["readings"] == 4
    assert by_id["counter-1"]["last"] == {}


@pytest.mark.parametrize(
    ("device", "sensor"),
    [
        ("thermo-1", "t"),
        ('a"b', 's"x'),
        ("ends-with-\\", "t"),
        ("d", '","sensor":"'),
        ('dev,"sensor":"y', "real"),
        ("é", "ü"),
    ],
)
def test_sensor_of_finds_the_sensor_of_any_stored_payload(device: str, sensor: str) -> None:
    assert sensor_of(encode(7, Sample(device, sensor, 1.5, 0.0))) == sensor


def test_sensor_of_a_foreign_payload() -> None:
    assert sensor_of(b'{"sensor": "x", "seq": 1}') == "x"
    assert sensor_of(b"not json") is None
    assert sensor_of(b'{"seq": 1}') is None


async def test_dashboard_is_self_contained(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        async with gw.session.get(gw.url("/")) as resp:
            assert resp.status == 200
            html = await resp.text()
            csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "http://" not in html
        assert "https://" not in html
        for asset in ("/static/app.js", "/static/style.css"):
            assert asset in html
            async with gw.session.get(gw.url(asset)) as resp:
                assert resp.status == 200
                assert "https://" not in await resp.text()


async def test_serve_over_tls_answers_https_and_wss(tmp_path: Path) -> None:
    ca, cert, key = issue_server_cert(tmp_path)
    port = free_port()
    local = local_settings(listen=f"127.0.0.1:{port}", cert_file=cert, key_file=key)
    store = await Store.open(tmp_path / "readings.db", StoreSettings())
    view = GatewayView(
        settings=Settings(gateway=GatewaySettings(id="gw-tls", data_dir=tmp_path), local=local),
        log=store,
        devices={},
        uplinks={},
        started=time.time(),
    )
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    server = asyncio.create_task(serve(view))
    base = f"https://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as s:

            async def answers() -> bool:
                try:
                    async with s.get(f"{base}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectorError:
                    return False

            await wait_until(answers)
            ws = await s.ws_connect(
                f"wss://127.0.0.1:{port}/api/v1/stream", params={"token": TOKEN}, origin=base
            )
            hello = await receive_json(ws)
            assert hello == {"type": "hello", "gateway": "gw-tls", "last_seq": 0}
            store.put_samples([Sample("thermo-1", "t", 21.5, time.time())])
            message = await receive_json(ws)
            assert [r["value"] for r in message["readings"]] == [21.5]
            await ws.close()
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
        await store.close()


async def test_serve_rejects_a_bad_listen_address(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "readings.db", StoreSettings())
    view = GatewayView(
        settings=Settings(local=local_settings(listen="localhost")),
        log=store,
        devices={},
        uplinks={},
        started=time.time(),
    )
    try:
        with pytest.raises(ConfigError, match=r"local\.listen"):
            await serve(view)
    finally:
        await store.close()


async def test_an_unreadable_log_is_a_503_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with local_gateway(tmp_path) as gw:

        async def failing_read(seq: int, limit: int, device_glob: str | None = None) -> None:
            # The fault a damaged disk would give; SQLite cannot be made to fail on cue.
            raise StoreError("disk I/O error")

        monkeypatch.setattr(gw.store, "read_after", failing_read)
        async with gw.session.get(gw.url("/api/v1/readings"), headers=gw.auth()) as resp:
            assert resp.status == 503
            assert "disk I/O error" in (await resp.json())["error"]
        ws = await gw.session.ws_connect(
            gw.url("/api/v1/stream"), params={"token": TOKEN, "since": 0}
        )
        assert (await receive_json(ws))["type"] == "hello"
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1011
        async with gw.session.get(gw.url("/healthz")) as resp:
            assert resp.status == 200
