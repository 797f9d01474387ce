"""Many WebSocket stream clients in one process, recording when each reading arrives.

Each client records ``(n, time.time(), ts)`` for every counter reading it
receives (the time taken once per message, as soon as aiohttp hands it over;
``ts`` is when the gateway read the line). Prints a
``progress`` JSON line every 100 ms; on SIGTERM closes the clients and writes
the records to ``OUT`` (doubles: n, arrival, reading ts, n, …) and a summary to ``OUT.json``.

    python -m benchmarks.ws_clients --url WS_URL --clients N --out FILE
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

# Handshakes in progress at once: enough to connect 1,000 clients in a second or
# two without the server seeing a burst it would never see from real clients.
CONNECTING = 50


@dataclass
class Tally:
    connected: int = 0
    closed: int = 0  # closed by the server while we were still listening
    gaps: int = 0
    readings: int = 0
    refused: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    records: array.array[float] = field(default_factory=lambda: array.array("d"))


async def one_client(
    session: aiohttp.ClientSession, url: str, tally: Tally, gate: asyncio.Semaphore
) -> None:
    async with gate:
        try:
            ws = await session.ws_connect(url, heartbeat=None, max_msg_size=0, compress=0)
        except aiohttp.ClientError:
            tally.refused += 1
            return
    tally.connected += 1
    rec = tally.records
    try:
        while True:
            msg = await ws.receive()
            t = time.time()
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    tally.closed += 1
                    code = str(ws.close_code)
                    tally.close_codes[code] = tally.close_codes.get(code, 0) + 1
                    return
                continue
            obj = json.loads(msg.data)
            kind = obj.get("type")
            if kind == "readings":
                for r in obj["readings"]:
                    if r.get("sensor") == "n":
                        rec.extend((float(r["value"]), t, float(r["ts"])))
                tally.readings += len(obj["readings"])
            elif kind == "gap":
                tally.gaps += 1
    finally:
        await ws.close()


async def run(url: str, clients: int, out: Path) -> None:
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    gate = asyncio.Semaphore(CONNECTING)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [
            asyncio.create_task(one_client(session, url, tally, gate), name=f"client-{i}")
            for i in range(clients)
        ]
        while not stop.is_set():
            print(
                json.dumps(
                    {
                        "event": "progress",
                        "connected": tally.connected,
                        "refused": tally.refused,
                        "closed": tally.closed,
                        "readings": tally.readings,
                        "gaps": tally.gaps,
                    }
                ),
                flush=True,
            )
            try:
                async with asyncio.timeout(0.1):
                    await stop.wait()
            except TimeoutError:
                pass
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    with out.open("wb") as f:
        tally.records.tofile(f)
    summary = {
        "clients": clients,
        "connected": tally.connected,
        "refused": tally.refused,
        "closed_by_server": tally.closed,
        "close_codes": tally.close_codes,
        "gaps": tally.gaps,
        "readings": tally.readings,
    }
    out.with_suffix(".json").write_text(json.dumps(summary))
    print(json.dumps({"event": "done", **summary}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.clients, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
