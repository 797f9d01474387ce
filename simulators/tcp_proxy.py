"""An asyncio TCP proxy a test controls, to put faults between a client and a server.

``TcpProxy(upstream_host, upstream_port)`` listens on a free 127.0.0.1 port and
relays every accepted connection to the upstream. Its owner can then:

- ``blackhole()``: keep every connection (and new ones) open but drop the bytes
  in both directions, like a dead route or a stuck NAT entry;
- ``resume()``: relay bytes again (a stream that lost bytes is usually broken
  beyond repair, so clients normally notice and reconnect);
- ``reset()``: close every current connection abruptly with a TCP RST
  (SO_LINGER 0) on both sides, like a crashed peer or a rebooted router.

The tests put it between the gateway and their broker (tests/support/tcp_proxy.py
has the fixture), and ``edge-gateway fleet-sim`` between each simulated gateway and the
fleet's broker, to blackhole a subset of the links on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Sequence

_CHUNK = 65536


class _Pair:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # Linger 0 makes close send RST instead of FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            writer.close()


class TcpProxy:
    host = "127.0.0.1"

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        fallbacks: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        # Tried in order when the upstream refuses a connection: a clustered broker's
        # other nodes, as a load balancer in front of the cluster would.
        self.fallbacks = tuple(fallbacks)
        self.port = 0
        self.blackholed = False
        self.accepted = 0  # connections accepted since start
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    def url(self, scheme: str = "mqtt") -> str:
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def blackhole(self) -> None:
        self.blackholed = True

    def resume(self) -> None:
        self.blackholed = False

    def reset(self) -> None:
        for pair in list(self._pairs):
            pair.abort()
        self._pairs.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pair in list(self._pairs):
            pair.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for host, port in ((self.upstream_host, self.upstream_port), *self.fallbacks):
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        try:
            # Either side ending (EOF, reset) ends the pair, as it would for a real peer.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._pairs.discard(pair)
            pair.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                if self.blackholed:
                    continue
                writer.write(data)
                await writer.drain()
