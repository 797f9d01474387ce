"""Bytes written per reading by the store alone: ``python -m benchmarks.store_wear``.

What the gateway's write path sends to the disk at a steady rate does not depend on
how busy the machine is, only on how many readings share a commit: so this measures it
without the event loop, the serial port or the broker, for each storage layout and
each batch size. One process opens a fresh store (durability full) in a directory
under ``/tmp`` for each case and commits ``--commits`` transactions of ``B`` readings
each, every one also moving an uplink's cursor to the previous batch (as the MQTT
uplink's acknowledgements do); ``write_bytes`` of ``/proc/self/io`` over the loop,
through psutil, gives bytes per reading and per commit. At 1,000 readings/s, ``B``
readings a commit is a commit every ``B`` ms. The layouts are switched as
``benchmarks.lever_run`` switches them; the first is the layout before this was
measured (``last_seq`` rewritten by every commit), the baseline of the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.report import RESULTS
from gateway.reading import Sample
from gateway.settings import Durability, StoreSettings
from gateway.store import Store, planner, schema
from gateway.store.planner import Totals, TransactionPlan

MIB = 1024 * 1024
BATCHES = (1, 4, 18, 50, 1000)
# Big batches are what the store commits at its maximum rate: there the CPU per reading
# tells whether a layout costs throughput. They need fewer commits to reach steady state.
BIG_BATCH = 100
_META_CHANGES = planner.meta_changes


def _every_commit(
    plan: TransactionPlan, totals: Totals, written: Totals, last_seq: int
) -> list[tuple[str, int]]:
    meta = _META_CHANGES(plan, totals, written, last_seq)
    if plan.last_seq and all(key != schema.META_LAST_SEQ for key, _ in meta):
        meta.append((schema.META_LAST_SEQ, plan.last_seq))
    return meta


def _layout(
    page: int, meta_every_commit: bool, checkpoint: int = 4 * MIB, journal_limit: int = 16 * MIB
) -> Callable[[], None]:
    def apply() -> None:
        schema.PAGE_SIZE = page
        schema.WAL_AUTOCHECKPOINT_BYTES = checkpoint
        schema.JOURNAL_SIZE_LIMIT = journal_limit
        planner.meta_changes = _every_commit if meta_every_commit else _META_CHANGES

    return apply


ON_DELETE = "1 KiB, last_seq only on delete"
LAYOUTS: dict[str, Callable[[], None]] = {
    "before: 1 KiB, last_seq every commit": _layout(1024, True),
    ON_DELETE: _layout(1024, False),
    "512 B, last_seq only on delete": _layout(512, False),
    "4 KiB, last_seq only on delete": _layout(4096, False),
    "1 KiB, last_seq only on delete, checkpoint 16 MiB": _layout(1024, False, 16 * MIB),
    "1 KiB, last_seq only on delete, journal_size_limit 0": _layout(1024, False, journal_limit=0),
}
# Durability normal: no fsync per commit, so the WAL's pages stay dirty between commits.
NORMAL = "1 KiB, last_seq only on delete, durability normal"


def _samples(first: int, count: int) -> list[Sample]:
    """Readings as the benchmarks' counter lines (``n=<i>``) on device ``paced-1`` make."""
    now = time.time()
    return [Sample("paced-1", "n", float(first + i), now) for i in range(count)]


async def one_case(batch: int, commits: int, durability: Durability = "full") -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="edge-bench-wear-"))
    try:
        settings = StoreSettings(durability=durability, commit_spacing=0)
        store = await Store.open(work / schema.DB_NAME, settings)
        try:
            await store.register_consumer("mqtt")
            me = psutil.Process()
            n = 0
            last = 0
            # Warm up: the file's first pages and the first WAL frames are not steady state.
            for _ in range(50):
                store.put_samples(_samples(n, batch))
                n += batch
                last = await store.flush()
            io0, cpu0, stats0 = me.io_counters().write_bytes, time.process_time(), store.stats()
            for _ in range(commits):
                ack = asyncio.ensure_future(store.ack("mqtt", last))
                store.put_samples(_samples(n, batch))
                n += batch
                last = await store.flush()
                await ack
            io1, cpu1, stats1 = me.io_counters().write_bytes, time.process_time(), store.stats()
        finally:
            await store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    readings = commits * batch
    made = stats1.commits - stats0.commits
    return {
        "batch": batch,
        "readings": readings,
        "commits": made,
        "bytes_per_reading": (io1 - io0) / readings,
        "bytes_per_commit": (io1 - io0) / made,
        "cpu_ms_per_commit": 1000 * (cpu1 - cpu0) / made,
        "cpu_us_per_reading": 1e6 * (cpu1 - cpu0) / readings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_wear", description=__doc__)
    parser.add_argument("--commits", type=int, default=2000, help="measured commits per case")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the layouts")
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        for batch in BATCHES:
            for name, apply in [*LAYOUTS.items(), (NORMAL, LAYOUTS[ON_DELETE])]:
                apply()
                commits = args.commits if batch < BIG_BATCH else max(20, args.commits // 20)
                durability: Durability = "normal" if name == NORMAL else "full"
                row = {"layout": name, **asyncio.run(one_case(batch, commits, durability))}
                rows.append(row)
                print(
                    f"{name:<52} {batch:3d}/commit  {row['bytes_per_reading']:7.0f} B/reading  "
                    f"{row['bytes_per_commit']:7.0f} B/commit  "
                    f"{row['cpu_ms_per_commit']:.2f} ms CPU/commit  "
                    f"{row['cpu_us_per_reading']:.1f} µs CPU/reading  ({row['commits']} commits)",
                    flush=True,
                )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / time.strftime("store-wear-%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.write_text(json.dumps({"runs": rows}, indent=1))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
