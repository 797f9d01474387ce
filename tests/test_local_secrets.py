"""Rotated secrets: after a reload the local server uses the new token and certificate."""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from tests.support.common import free_port, wait_until
from tests.support.gateway_proc import TOKEN, GatewayProcess
from tests.support.local import issue_server_cert, local_settings, receive_json, served

NEW_TOKEN = "rotated-token-abcdefghijklmnop"


async def status_code(gw: GatewayProcess, token: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{gw.base_url}/api/v1/status", headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        return resp.status


async def test_sighup_replaces_a_token_rotated_in_its_file(
    tmp_path: Path, gateway_process: GatewayProcess
) -> None:
    gw = gateway_process
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    gw.token_file = token_file
    gw.start()
    await gw.wait_healthy()
    assert await status_code(gw, TOKEN) == 200
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{gw.base_url}/api/v1/stream", params={"token": TOKEN})
        assert (await receive_json(ws))["type"] == "hello"

        token_file.write_text(NEW_TOKEN + "\n")
        gw.signal(signal.SIGHUP)

        async def old_refused() -> bool:
            return await status_code(gw, TOKEN) == 401

        await wait_until(old_refused, message="the old token refused after the reload")
        assert await status_code(gw, NEW_TOKEN) == 200
        # A stream opened with the old token does not outlive it.
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert gw.proc is not None
    assert gw.proc.poll() is None
    assert gw.terminate() == 0
    assert TOKEN not in gw.log_text()
    assert NEW_TOKEN not in gw.log_text()


def _client(ca: trustme.CA) -> aiohttp.ClientSession:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    # A new connection per request: each one shows the certificate served right now.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, force_close=True))


async def _served_by(ca: trustme.CA, url: str) -> bool:
    """Whether the server presents a certificate issued by ``ca``."""
    async with _client(ca) as session:
        try:
            async with session.get(url) as resp:
                return resp.status == 200
        except aiohttp.ClientConnectorCertificateError:
            return False


async def test_reload_loads_a_rotated_certificate_and_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_ca, cert, key = issue_server_cert(tmp_path)
    port = free_port()
    local = local_settings(listen=f"127.0.0.1:{port}", cert_file=cert, key_file=key)
    reload = asyncio.Event()
    url = f"https://127.0.0.1:{port}/healthz"
    async with served(tmp_path, local, reload):
        assert await _served_by(old_ca, url)

        new_ca = trustme.CA()
        issued = new_ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(cert)
        issued.private_key_pem.write_to_path(key)
        reload.set()

        await wait_until(lambda: _served_by(new_ca, url), message="the new certificate served")
        assert not await _served_by(old_ca, url)

        # A pair that does not load (the key of another certificate) changes nothing.
        trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(key)
        reload.set()
        await wait_until(
            lambda: "keeps its previous secrets" in caplog.text, message="the reload refused"
        )
        assert await _served_by(new_ca, url)


async def test_idle_tls_handshakes_are_counted_capped_and_cut(tmp_path: Path) -> None:
    ca, cert, key = issue_server_cert(tmp_path)
    port = free_port()
    local = local_settings(
        listen=f"127.0.0.1:{port}",
        cert_file=cert,
        key_file=key,
        header_timeout=1.0,
        max_connections_per_address=8,
    )
    silent: list[asyncio.StreamWriter] = []
    async with served(tmp_path, local):
        # Neighbours that connect and never send a ClientHello.
        for _ in range(40):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.2", 0)
            )
            silent.append(writer)
        url = f"https://127.0.0.1:{port}/metrics"
        assert await _served_by(ca, url)
        scraped: list[str] = []

        async def cut() -> bool:
            async with _client(ca) as session, session.get(url) as resp:
                scraped.append(await resp.text())
            return "edge_gateway_local_connections_timed_out_total 8" in scraped[-1]

        await wait_until(cut, message="the silent handshakes cut by the header deadline")
        refused = 'edge_gateway_local_connections_refused_total{reason="per_address"} 32'
        assert refused in scraped[-1]
        for writer in silent:
            writer.close()


async def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    port = free_port()
    local = local_settings(listen=f"127.0.0.1:{port}", keepalive_timeout=0.5)
    async with served(tmp_path, local):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        # Kept alive, then closed by the server once idle: the read ends without a request.
        async with asyncio.timeout(10):
            await reader.read()
        assert reader.at_eof()
        writer.close()
