"""The local server of a real gateway process against a hostile LAN neighbour."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.local.redact import redact
from tests.support.gateway_proc import TOKEN, GatewayProcess, gateway_process

__all__ = ["gateway_process"]  # the fixture, used by name

BAD_REQUESTS = 200


async def _send_raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    return answer


async def test_malformed_requests_cannot_flood_the_journal(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    gw = gateway_process
    gw.start()
    await gw.wait_healthy()
    for i in range(BAD_REQUESTS):
        # Each one different, as a neighbour flooding on purpose would send them.
        answer = await _send_raw(
            gw.local_port,
            b"GET /healthz?token=%s HTTP/1.1\r\nHost: h\r\nBad header %d\r\n\r\n"
            % (TOKEN.encode(), i),
        )
        assert answer.startswith(b"HTTP/1.0 400"), answer[:80]
    # The gateway still answers and said what happened, in a bounded number of lines.
    status = await gw.status()
    assert status["gateway"] == gw.gateway_id
    gw.terminate()
    text = gw.log_text()
    assert TOKEN not in text
    logged = [line for line in text.splitlines() if "refused a malformed request" in line]
    assert 1 <= len(logged) <= 10, f"{len(logged)} lines for {BAD_REQUESTS} bad requests"
    # One line each, as warnings about the peer, not errors with the parser's traceback.
    assert "Error handling request" not in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    "line",
    [
        f"GET /api/v1/stream?token={TOKEN},part2&since=1 HTTP/1.1",
        f"GET /api/v1/stream?token={TOKEN};part2 HTTP/1.1",
        "Authorization: Basic dXNlcjpwYXJ0Mg==",  # user:part2
        f"b'Authorization: Bearer {TOKEN},part2\\r\\nHost: h'",
    ],
)
def test_redaction_keeps_no_part_of_a_secret(line: str) -> None:
    redacted = redact(line)
    assert TOKEN not in redacted
    assert "part2" not in redacted
    assert "dXNlcjpwYXJ0Mg" not in redacted
