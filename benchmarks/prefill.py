"""Fill a gateway's log with N readings through the Store API, as an outage would.

The uplink's cursor is registered first (as the running gateway would have), so
every reading put here is owed to it. Run before the gateway starts, on its data
directory; the drain benchmark then measures only the delivery. A ``--follower`` is
a cursor that ends at the last reading, as an uplink's priority lane does when it
follows the log through an outage over readings it does not carry.

    python -m benchmarks.prefill --data-dir DIR --count N [--durability full|normal]
        [--device ID] [--sensor NAME] [--consumer NAME] [--follower NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from gateway.reading import Sample
from gateway.settings import StoreSettings
from gateway.store import Store

CHUNK = 5_000


async def prefill(
    data_dir: Path,
    count: int,
    durability: str,
    device: str,
    sensor: str = "n",
    consumer: str = "mqtt",
    followers: tuple[str, ...] = (),
) -> dict[str, object]:
    settings = StoreSettings(durability="full" if durability == "full" else "normal")
    store = await Store.open(data_dir / "readings.db", settings)
    t0 = time.monotonic()
    try:
        for name in (consumer, *followers):
            await store.register_consumer(name)
        now = time.time()
        for start in range(1, count + 1, CHUNK):
            stop = min(start + CHUNK, count + 1)
            store.put_samples([Sample(device, sensor, n, now) for n in range(start, stop)])
            # The store's intake is bounded; wait for each chunk so none is refused.
            await store.flush()
        for name in followers:
            await store.ack(name, store.last_seq)
        await store.flush()
        stats = store.stats()
    finally:
        await store.close()
    return {
        "event": "done",
        "seconds": time.monotonic() - t0,
        "last_seq": stats.last_seq,
        "depth": stats.depth,
        "dropped": stats.dropped,
        "bytes": stats.bytes,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    parser.add_argument("--device", default="backlog-1")
    parser.add_argument("--sensor", default="n")
    parser.add_argument("--consumer", default="mqtt", help="the uplink the readings are owed to")
    parser.add_argument(
        "--follower", action="append", default=[], help="a cursor left at the last reading"
    )
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(
        prefill(
            args.data_dir,
            args.count,
            args.durability,
            args.device,
            args.sensor,
            args.consumer,
            tuple(args.follower),
        )
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
