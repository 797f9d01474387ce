"""The reference ingest server against hostile and broken clients: each gets a clear error,
a close code and a counter; the server keeps serving, and nothing wrong lands."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cloud.ingest_server import IngestSettings
from gateway.uplinks.ws_protocol import SUBPROTOCOL, CloseCode, hello
from tests.support.cli import edge_gateway
from tests.support.common import free_port
from tests.support.ingest import INGEST_TOKEN, ingest_metrics, served, ws_url
from tests.support.landing import landed_bodies

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}"}


def reading(seq: int) -> dict[str, Any]:
    return {"seq": seq, "ts": 1764086400.0, "device": "d", "sensor": "t", "value": seq}


def batch(first: int, last: int, readings: list[Any], gateway: str = "gw-1") -> str:
    body = {"type": "batch", "gateway": gateway, "first_seq": first, "last_seq": last}
    return json.dumps({**body, "readings": readings})


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[IngestSettings]:
    settings = IngestSettings(
        "127.0.0.1",
        free_port(),
        f"sqlite://{tmp_path / 'landing.db'}",
        token=INGEST_TOKEN,
        max_message_bytes=64 * 1024,
    )
    async with served(settings):
        yield settings


async def exchange(
    settings: IngestSettings, *messages: str | bytes, until_ack: int | None = None
) -> tuple[list[Any], int]:
    """Say hello as gw-1 after seq 0, send ``messages``; what came back (until the ack of
    ``until_ack``, or the server's close), and the close code."""
    received: list[Any] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(settings.port), protocols=(SUBPROTOCOL,), headers=AUTH) as ws,
    ):
        await ws.send_str(hello("gw-1", 0))
        for message in messages:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        async for msg in ws:
            received.append(json.loads(msg.data))
            if received[-1] == {"type": "ack", "seq": until_ack}:
                await ws.close()
    assert ws.close_code is not None
    return received, ws.close_code


async def test_batches_are_acked_after_landing_and_duplicates_counted(
    server: IngestSettings,
) -> None:
    received, _ = await exchange(
        server, batch(1, 3, [reading(1), reading(3)]), batch(4, 4, [reading(4)]), until_ack=4
    )
    assert received[0]["type"] == "welcome"
    # Batches that waited together land together, and one ack answers them.
    assert [m["seq"] for m in received[1:]] in ([3, 4], [4])
    # The same again, from a fresh connection: acked, and landed once.
    await exchange(server, batch(1, 4, [reading(1), reading(3), reading(4)]), until_ack=4)
    assert sorted(await landed_bodies(server.db_url, "gw-1")) == [1, 3, 4]
    metrics = await ingest_metrics(server.port)
    assert (metrics["readings_landed"], metrics["readings_duplicate"]) == (3, 3)
    assert metrics["bad_messages"] == 0


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        ("not json", CloseCode.BAD_MESSAGE, "not JSON"),
        (b"\xff\xfe binary garbage", CloseCode.BAD_MESSAGE, "not JSON"),
        ('["an", "array"]', CloseCode.BAD_MESSAGE, 'string "type"'),
        ('{"type": "subscribe"}', CloseCode.BAD_MESSAGE, "unknown message type"),
        (batch(5, 9, [reading(5)]), CloseCode.BAD_MESSAGE, "starts at 1"),
        (batch(1, 2, [reading(2), reading(1)]), CloseCode.BAD_MESSAGE, "ascending"),
        (batch(1, 1, [reading(1)], gateway="gw-2"), CloseCode.BAD_MESSAGE, "session of"),
        (batch(1, 1, [{**reading(1), "ts": "soon"}]), CloseCode.BAD_MESSAGE, "ts"),
        (batch(1, 1, [reading(1) | {"pad": "x" * 70_000}]), CloseCode.TOO_BIG, "bad frame"),
    ],
)
async def test_a_bad_message_is_answered_counted_and_lands_nothing(
    server: IngestSettings, message: str | bytes, code: CloseCode, reason: str
) -> None:
    received, close_code = await exchange(server, message)
    assert close_code == code
    if code is not CloseCode.TOO_BIG:
        assert received[-1]["type"] == "error"
        assert reason in received[-1]["message"]
        assert received[-1]["code"] == code
    assert await landed_bodies(server.db_url, "gw-1") == {}
    assert (await ingest_metrics(server.port))["bad_messages"] == 1
    # The server still lands a good batch.
    received, _ = await exchange(server, batch(1, 1, [reading(1)]), until_ack=1)
    assert received[-1] == {"type": "ack", "seq": 1}


async def test_refused_before_the_upgrade(server: IngestSettings) -> None:
    url = ws_url(server.port)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_token:
            await session.ws_connect(url, protocols=(SUBPROTOCOL,))
        assert no_token.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_protocol:
            await session.ws_connect(url, headers=AUTH)
        assert no_protocol.value.status == 400
        async with session.ws_connect(url, protocols=(SUBPROTOCOL,), headers=AUTH) as ws:
            await ws.send_str(json.dumps({"type": "hello", "version": 99, "gateway": "gw-1"}))
            error = await ws.receive_json()
            await ws.receive()
        assert "version 99" in error["message"]
        assert ws.close_code == CloseCode.UNSUPPORTED_VERSION
    metrics = await ingest_metrics(server.port)
    assert (metrics["refused_auth"], metrics["refused_handshake"]) == (1, 1)


def test_the_command_line_names_a_bad_option_and_exits_2(tmp_path: Path) -> None:
    result = edge_gateway("ingest", "--listen", "nowhere", "--db", f"sqlite://{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert "--listen" in result.stderr
    result = edge_gateway("ingest", "--listen", "127.0.0.1:1", "--db", "mysql://x")
    assert result.returncode == 1
    assert "expected sqlite://PATH or postgresql://" in result.stderr


async def test_a_gateway_holds_a_normal_and_a_priority_stream_each_contiguous(
    server: IngestSettings,
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(server.port), protocols=(SUBPROTOCOL,), headers=AUTH) as normal,
        session.ws_connect(ws_url(server.port), protocols=(SUBPROTOCOL,), headers=AUTH) as high,
    ):
        # The normal stream starts at 0, the priority stream at its own cursor, 6.
        await normal.send_str(hello("gw-1", 0))
        await high.send_str(hello("gw-1", 6, "priority"))
        assert (await normal.receive_json())["type"] == "welcome"
        assert (await high.receive_json())["type"] == "welcome"
        # Interleaved, each stream contiguous on its own: seq 7 is the priority
        # stream's, the normal stream's batch covers it without it.
        await high.send_str(batch(7, 8, [reading(7)]))
        assert await high.receive_json() == {"type": "ack", "seq": 8}
        await normal.send_str(batch(1, 8, [reading(s) for s in (1, 2, 3, 4, 5, 6, 8)]))
        assert await normal.receive_json() == {"type": "ack", "seq": 8}
        await high.send_str(batch(9, 9, []))
        assert await high.receive_json() == {"type": "ack", "seq": 9}
        metrics = await ingest_metrics(server.port)
        assert (metrics["connections"], metrics["connected"]) == (2, 2)
    assert sorted(await landed_bodies(server.db_url, "gw-1")) == list(range(1, 9))
    metrics = await ingest_metrics(server.port)
    assert (metrics["readings_landed"], metrics["readings_duplicate"]) == (8, 0)
    # A lane the protocol does not name is refused.
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(server.port), protocols=(SUBPROTOCOL,), headers=AUTH) as ws,
    ):
        await ws.send_str(hello("gw-1", 0, "urgent"))
        error = await ws.receive_json()
        await ws.receive()
    assert "lane" in error["message"]
    assert ws.close_code == CloseCode.BAD_MESSAGE
