"""The connection guard in front of aiohttp: caps, eviction of idle connections, deadlines."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from gateway.local.connections import ACCEPT_BURST, FD_RESERVE, connection_limit
from tests.support.common import free_port, wait_until
from tests.support.local import local_settings, parse_samples, served


async def scrape(port: int) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return parse_samples(await resp.text())


def test_the_limit_leaves_the_reserve_free() -> None:
    assert connection_limit(256, None) == 256
    assert connection_limit(256, 10_000) == 256
    assert connection_limit(256, 200) == 200 - FD_RESERVE - ACCEPT_BURST
    assert connection_limit(256, 10) == 1


async def test_beyond_the_per_address_cap_a_connection_gets_503(tmp_path: Path) -> None:
    port = free_port()
    local = local_settings(listen=f"127.0.0.1:{port}", max_connections_per_address=2)
    async with served(tmp_path, local):
        held = [
            await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
            for _ in range(2)
        ]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.3", 0)
        )
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert answer.endswith(b'{"error":"too many connections; retry later"}')
        # Another address (the scrape's) is not affected.
        samples = await scrape(port)
        assert samples['edge_gateway_local_connections_refused_total{reason="per_address"}'] == 1
        for _, held_writer in held:
            held_writer.close()


async def test_at_the_limit_the_longest_idle_connection_makes_room(tmp_path: Path) -> None:
    port = free_port()
    local = local_settings(listen=f"127.0.0.1:{port}", max_connections=3)
    async with served(tmp_path, local):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]

        async def all_three_open() -> bool:
            return (await scrape(port))["edge_gateway_local_connections"] == 3

        # Each scrape takes the place of the longest idle connection.
        await wait_until(all_three_open, message="three connections open")
        first_reader, _ = idle[0]
        # Cut without a word: an abort may show as a reset.
        with contextlib.suppress(ConnectionResetError):
            assert await first_reader.read() == b""
        samples = await scrape(port)
        assert samples["edge_gateway_local_connections_evicted_total"] >= 1
        assert samples["edge_gateway_local_connections"] <= 3
        for _, writer in idle:
            writer.close()


async def test_a_slow_request_head_is_cut_and_a_prompt_one_served(tmp_path: Path) -> None:
    port = free_port()
    local = local_settings(listen=f"127.0.0.1:{port}", header_timeout=0.5)
    async with served(tmp_path, local):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        async with asyncio.timeout(10):
            # The head never ends: the server cuts the connection.
            assert await reader.read() == b""
        writer.close()
        assert (await scrape(port))["edge_gateway_local_connections_timed_out_total"] == 1
