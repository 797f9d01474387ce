"""No token in any log line, including requests aiohttp rejects before any handler runs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from gateway.local.redact import redact
from tests.support.common import free_port
from tests.support.local import TOKEN, local_settings, served

BAD_REQUESTS = [
    # A header line without a colon.
    b"GET /api/v1/stream?token=%s HTTP/1.1\r\nHost: h\r\nNot a header\r\n\r\n",
    # A control character in the target.
    b"GET /api/v1/stream?token=%s\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
    # A method that is not one.
    b"G@T /api/v1/stream?token=%s HTTP/1.1\r\nHost: h\r\n\r\n",
    # A version that is not one.
    b"GET /api/v1/stream?token=%s HTTP/9.x\r\nHost: h\r\n\r\n",
    # The token in a header, with a header that is too long.
    b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\r\nX-Long: "
    + b"a" * 9000
    + b"\r\n\r\n",
    # The token percent-encoded, in a request line that is too long.
    b"GET /api/v1/stream?token%%3D%s&pad=" + b"p" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
]


def test_redact_hides_tokens_in_every_spelling() -> None:
    for text in (
        f"GET /api/v1/stream?token={TOKEN}&since=3",
        f"b'GET /?x=1&token={TOKEN} HTTP/1.1'",
        f"Authorization: Bearer {TOKEN}",
        f"authorization: {TOKEN}",
        f"token%3D{TOKEN}",
        f"GET /api/v1/stream?%74oken={TOKEN} HTTP/1.1",
        f"GET /api/v1/stream?since=1&T%4F%4B%45%4E%3D{TOKEN}",
    ):
        assert TOKEN not in redact(text), text


async def test_requests_aiohttp_rejects_leave_no_token_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    async with served(tmp_path, local_settings(listen=f"127.0.0.1:{port}")):
        for template in BAD_REQUESTS:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(template % TOKEN.encode())
            response = await reader.read()
            writer.close()
            assert response.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431", b"HTTP/1.0 400")), (
                response[:100]
            )
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/api/v1/status",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as resp,
        ):
            assert resp.status == 200
    rejected = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert rejected, "aiohttp logged none of the bad requests"
    assert TOKEN not in caplog.text
    assert "<redacted>" in caplog.text
