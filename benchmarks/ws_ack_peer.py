"""A WebSocket peer that acknowledges every batch on receipt, storing nothing.

The measuring instrument for the WebSocket uplink's own throughput, as the MQTT
benchmark's mosquitto (persistence off, no subscriber) is for the MQTT uplink: it
answers the hello and acks each batch by its ``last_seq``, read from the batch's
head without decoding its readings. Not a server to deploy: nothing is stored.

    python -m benchmarks.ws_ack_peer --port P
"""

from __future__ import annotations

import argparse
import re

from aiohttp import WSMsgType, web

from gateway.uplinks.ws_protocol import SUBPROTOCOL, ack, welcome

# The gateway writes the head first: the last seq is within the first few dozen bytes.
_LAST_SEQ = re.compile(rb'"last_seq":(\d+)')
_HEAD = 256


async def session(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), max_msg_size=64 * 1024 * 1024)
    await ws.prepare(request)
    await ws.receive()  # the hello
    await ws.send_str(welcome(64 * 1024 * 1024, 64))
    async for msg in ws:
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            break
        data = msg.data.encode() if isinstance(msg.data, str) else msg.data
        found = _LAST_SEQ.search(data, 0, _HEAD)
        if found is None:
            break
        await ws.send_str(ack(int(found[1])))
    return ws


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/ingest", session)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
