"""The fan-out baseline: a hand-written live view without the gateway.

A thread reads lines from the serial port (pyserial ``readline``) and hands each
to the event loop, which sends it as JSON to every connected WebSocket client in
turn. No store, no replay, no per-client queue, no auth: a slow client holds up
the others.
Messages have the stream's shape so the same client processes can count them.

    python -m benchmarks.naive_ws --serial PATH --listen-port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import AsyncIterator

import serial
from aiohttp import web

from benchmarks.naive_baseline import parse


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serial", required=True)
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--device", default="naive-1")
    args = parser.parse_args()

    clients: set[web.WebSocketResponse] = set()

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        clients.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            clients.discard(ws)
        return ws

    async def broadcast(line: bytes) -> None:
        ts = time.time()
        readings = [
            {"device": args.device, "sensor": k, "value": v, "ts": ts}
            for k, v in parse(line).items()
        ]
        message = json.dumps({"type": "readings", "readings": readings})
        for ws in list(clients):
            await ws.send_str(message)

    async def start_reader(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes] = asyncio.Queue()
        port = serial.Serial(args.serial, 115200, timeout=1)

        def read_forever() -> None:
            while True:
                line = port.readline()
                if line.strip():
                    loop.call_soon_threadsafe(lines.put_nowait, line)

        async def send_forever() -> None:
            while True:
                await broadcast(await lines.get())

        threading.Thread(target=read_forever, daemon=True).start()
        sender = asyncio.create_task(send_forever())
        yield
        sender.cancel()

    app = web.Application()
    app.router.add_get("/api/v1/stream", stream)
    app.cleanup_ctx.append(start_reader)
    web.run_app(app, host="127.0.0.1", port=args.listen_port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
