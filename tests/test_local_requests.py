"""Every request parameter is bounded: a 4xx or a close code and a counter, never a 500."""

from __future__ import annotations

import asyncio
import fnmatch
import json
from pathlib import Path

import aiohttp
import pytest

from gateway.globs import MAX_GLOB_LENGTH, check_device_glob, glob_matcher, sqlite_glob
from gateway.local.keys import HUB
from gateway.local.server import CONTENT_SECURITY_POLICY
from tests.support.common import wait_until
from tests.support.local import (
    TOKEN,
    LocalGateway,
    local_gateway,
    local_settings,
    parse_samples,
    receive_json,
)

STREAM = "/api/v1/stream"


async def refused(gw: LocalGateway, code: str) -> float:
    async with gw.session.get(gw.url("/metrics")) as resp:
        samples = parse_samples(await resp.text())
    return samples[f'edge_gateway_local_requests_refused_total{{code="{code}"}}']


async def stream_status(gw: LocalGateway, **params: str) -> int:
    try:
        ws = await gw.session.ws_connect(gw.url(STREAM), params={"token": TOKEN, **params})
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


@pytest.mark.parametrize(
    "params",
    [
        {"since": str(2**63)},
        {"since": "9" * 5000},
        {"since": "1e3"},
        {"since": "٣"},
        {"device": "x" * (MAX_GLOB_LENGTH + 1)},
        {"device": "thermo-["},
        {"device": "a/b"},
        {"device": "é*"},
        {"device": "[^a]"},
    ],
)
async def test_bad_parameters_get_400_and_are_counted(
    tmp_path: Path, params: dict[str, str]
) -> None:
    async with local_gateway(tmp_path) as gw:
        assert await stream_status(gw, **params) == 400
        async with gw.session.get(
            gw.url("/api/v1/readings"), headers=gw.auth(), params=params
        ) as resp:
            assert resp.status == 400
            assert "error" in await resp.json()
        assert await refused(gw, "400") == 2


async def test_largest_seq_and_negative_since_are_accepted(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        assert await stream_status(gw, since=str(2**63 - 1)) == 101
        assert await stream_status(gw, since="-5") == 101
        page = await gw.get_json("/api/v1/readings", since=2**63 - 1)
        assert page == {"readings": [], "next": None}


async def test_a_long_sensor_filter_is_refused(tmp_path: Path) -> None:
    async with (
        local_gateway(tmp_path) as gw,
        gw.session.get(
            gw.url("/api/v1/readings"), headers=gw.auth(), params={"sensor": "s" * 65}
        ) as resp,
    ):
        assert resp.status == 400


@pytest.mark.parametrize(
    "glob", ["thermo-*", "thermo-[12]", "[!c]*", "*-[0-9]", "t?ermo-1", "[a-z]*-[!2]"]
)
def test_globs_match_alike_in_python_and_in_sqlite(glob: str) -> None:
    import sqlite3  # noqa: PLC0415 - only this test needs it

    check_device_glob(glob)
    ids = ["thermo-1", "thermo-2", "counter-1", "c", "t", "thermo-12", "x-9"]
    pattern = sqlite_glob(glob)
    assert pattern is not None
    with sqlite3.connect(":memory:") as conn:
        in_sqlite = [i for i in ids if conn.execute("SELECT ? GLOB ?", (i, pattern)).fetchone()[0]]
    matches = glob_matcher(glob)
    assert in_sqlite == [i for i in ids if matches(i)] == fnmatch.filter(ids, glob)


async def test_device_globs_filter_history_and_stream_without_a_global_cache(
    tmp_path: Path,
) -> None:
    async with local_gateway(tmp_path, device_ids=("thermo-1", "thermo-2", "counter-1")) as gw:
        cache_before = fnmatch._compile_pattern.cache_info().currsize  # type: ignore[attr-defined]
        streams = [
            await gw.session.ws_connect(
                gw.url(STREAM), params={"token": TOKEN, "device": f"thermo-[{n}]"}
            )
            for n in (1, 2)
        ]
        for ws in streams:
            assert (await receive_json(ws))["type"] == "hello"
        for device in ("thermo-1", "thermo-2", "counter-1"):
            gw.put(device, "t", [1.0])
        await gw.store.flush()
        for ws, device in zip(streams, ("thermo-1", "thermo-2"), strict=True):
            message = await receive_json(ws)
            assert [r["device"] for r in message["readings"]] == [device]
            await ws.close()
        page = await gw.get_json("/api/v1/readings", device="[!c]*")
        assert [r["device"] for r in page["readings"]] == ["thermo-1", "thermo-2"]
        assert fnmatch._compile_pattern.cache_info().currsize == cache_before  # type: ignore[attr-defined]


async def test_a_token_that_is_not_utf8_is_a_401(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        writer.write(
            b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer \xff\xfe\xc3(\r\nConnection: close\r\n\r\n"
        )
        response = await reader.read()
        writer.close()
        assert response.startswith(b"HTTP/1.1 401 "), response[:200]
        async with gw.session.get(gw.url(STREAM), params={"token": "%ff%fe\udcff"}) as resp:
            assert resp.status == 401
        assert await refused(gw, "401") == 2


async def test_deeply_nested_inbound_messages_get_an_error_and_the_stream_goes_on(
    tmp_path: Path,
) -> None:
    local = local_settings(max_inbound_bytes=1024 * 1024, max_inbound_per_second=100.0)
    async with local_gateway(tmp_path, local=local) as gw:
        ws = await gw.session.ws_connect(gw.url(STREAM), params={"token": TOKEN})
        assert (await receive_json(ws))["type"] == "hello"
        for nested in ("[" * 100_000, '{"a":' * 50_000):
            await ws.send_str(nested)
            assert await receive_json(ws) == {"type": "error", "error": "nested too deeply"}
        await ws.send_str(json.dumps({"type": "ping"}))
        assert await receive_json(ws) == {"type": "pong"}
        async with gw.session.get(gw.url("/healthz")) as resp:
            assert resp.status == 200
        async with gw.session.get(gw.url("/metrics")) as resp:
            samples = parse_samples(await resp.text())
        assert samples["edge_gateway_local_inbound_errors_total"] == 2
        # Beyond max_inbound_bytes the connection is closed with 1009.
        await ws.send_str("[" * (1024 * 1024 + 1))
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        hub = gw.server.app[HUB]
        await wait_until(lambda: hub.counters.inbound_errors == 3, message="the close counted")


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
async def test_open_endpoints_answer_only_to_known_host_names(tmp_path: Path, path: str) -> None:
    local = local_settings(allowed_hosts=("gw.example.lan",))
    async with local_gateway(tmp_path, local=local) as gw:
        port = gw.server.port
        for host, status in [
            (f"127.0.0.1:{port}", 200),
            ("192.168.1.20", 200),
            (f"[::1]:{port}", 200),
            (f"localhost:{port}", 200),
            (f"GW.example.lan:{port}", 200),
            ("gw.example.lan.", 200),
            (f"evil.example.com:{port}", 403),
            ("127.0.0.1.evil.example.com", 403),
        ]:
            async with gw.session.get(gw.url(path), headers={"Host": host}) as resp:
                assert resp.status == status, host
        # The dashboard's page needs no such check: it holds no data.
        async with gw.session.get(gw.url("/"), headers={"Host": "evil.example.com"}) as resp:
            assert resp.status == 200
        assert await refused(gw, "403") == 2


async def test_metrics_can_require_the_token(tmp_path: Path) -> None:
    async with local_gateway(tmp_path, local=local_settings(metrics_require_token=True)) as gw:
        async with gw.session.get(gw.url("/metrics")) as resp:
            assert resp.status == 401
        async with gw.session.get(gw.url("/metrics"), params={"token": TOKEN}) as resp:
            assert resp.status == 401
        async with gw.session.get(gw.url("/metrics"), headers=gw.auth()) as resp:
            assert resp.status == 200
        async with gw.session.get(gw.url("/healthz")) as resp:
            assert resp.status == 200


async def test_the_page_may_connect_only_to_its_own_origin(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw, gw.session.get(gw.url("/")) as resp:
        csp = resp.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["connect-src"] == "'self'"
