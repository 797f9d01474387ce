"""WebSocket uplink throughput against the MQTT uplink, on the same bench in the same run.

For each uplink the log is filled with N readings (what an outage leaves behind,
owed to that uplink), then the server starts, then the gateway process. The rate
is the uplink's own count of acknowledged readings
(``edge_gateway_uplink_published_readings_total`` in /metrics, moved at each ack,
for both uplinks alike), sampled every 20 ms: readings acknowledged between the
first and the last sample that saw progress, over that time.

- baseline: the MQTT uplink (as shipped) to a private mosquitto (persistence off, no
  subscriber); an ack is the broker's PUBACK;
- the WebSocket uplink (as shipped) to ``benchmarks.ws_ack_peer``, which acks each
  batch on receipt as mosquitto does: the uplink against the uplink;
- the same with permessage-deflate, and the deflate ratio of one batch;
- the WebSocket uplink to ``edge-gateway ingest`` storing into SQLite (WAL,
  synchronous=FULL), an ack after the commit: the whole way into a database, which is
  more than a PUBACK promises, with the reference server's Python in the path.

``python -m benchmarks ws_uplink`` (``--quick`` for a short run).
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    BenchError,
    Child,
    Gateway,
    GatewayConfig,
    PtyLink,
    cpu_percent,
    listening,
    private_broker,
    python_module,
    scratch_dir,
    snapshot,
    wait_for,
)
from benchmarks.plan import Plan
from benchmarks.report import BenchResult, Figure
from gateway.reading import StoredReading
from gateway.uplinks.ws_protocol import batch_frame
from tests.support.common import free_port

BENCH = "ws_uplink"
INGEST_TOKEN = "bench-ingest-token-0123456789"
SAMPLE_INTERVAL = 0.02
INTO_SQLITE = "websocket into SQLite"


def prefill(data_dir: Path, count: int, consumer: str, work: Path) -> None:
    args = ["--data-dir", str(data_dir), "--count", str(count), "--consumer", consumer]
    filled = Child("prefill", python_module("benchmarks.prefill", *args), work)
    fill = filled.wait_event("done", 60 + count / 20_000)
    filled.stop()
    if fill["last_seq"] != count or fill["dropped"]:
        raise BenchError(f"prefill stored {fill['last_seq']} of {count} readings")


@contextlib.contextmanager
def ingest_server(work: Path) -> Iterator[tuple[str, Path]]:
    """``edge-gateway ingest`` on a free port into SQLite; its ws:// URL and database."""
    port = free_port()
    db = work / "landing.db"
    command = python_module("gateway", "ingest", "--listen", f"127.0.0.1:{port}")
    command += ["--db", f"sqlite://{db}", "--token", INGEST_TOKEN, "--log-level", "WARNING"]
    with Child("ingest", command, work) as server:
        wait_for(lambda: listening(port), 30, f"ingest server ({server.tail()})", interval=0.05)
        yield f"ws://127.0.0.1:{port}/ingest", db


@contextlib.contextmanager
def ack_peer(work: Path) -> Iterator[str]:
    port = free_port()
    with Child("ack-peer", python_module("benchmarks.ws_ack_peer", "--port", str(port)), work) as p:
        wait_for(lambda: listening(port), 30, f"ack peer ({p.tail()})", interval=0.05)
        yield f"ws://127.0.0.1:{port}/ingest"


def drain(gw: Gateway, uplink: str, count: int) -> dict[str, Any]:
    """Sample the uplink's acknowledged readings until all ``count`` are; the rate."""
    key = f'edge_gateway_uplink_published_readings_total{{uplink="{uplink}"}}'
    deadline = time.monotonic() + 60 + count / 2_000
    first: tuple[float, float] | None = None
    last: tuple[float, float] = (time.monotonic(), 0.0)
    s0 = snapshot(gw.pid)
    while time.monotonic() < deadline:
        now, done = time.monotonic(), gw.metrics().get(key, 0.0)
        if done > last[1]:
            if first is None:
                first = last  # the sample before the first progress
            last = (now, done)
        if done >= count:
            break
        time.sleep(SAMPLE_INTERVAL)
    s1 = snapshot(gw.pid)
    if last[1] < count or first is None:
        raise BenchError(f"{uplink}: {last[1]:.0f} of {count} readings acknowledged")
    seconds = last[0] - first[0]
    return {
        "uplink": uplink,
        "count": count,
        "seconds": seconds,
        "per_s": (last[1] - first[1]) / seconds,
        "gateway_cpu_percent": cpu_percent(s0, s1),
    }


def measure(kind: str, count: int) -> dict[str, Any]:
    work = scratch_dir(f"ws-uplink-{kind}")
    config_dir = work / "gw"
    config_dir.mkdir()
    link = PtyLink(work / "tty-idle")
    uplink = "mqtt" if kind == "mqtt" else "websocket"
    try:
        prefill(config_dir / "data", count, uplink, work)
        with contextlib.ExitStack() as stack:
            config = GatewayConfig(config_dir, [("idle-1", link.path)], None)
            landed_db: Path | None = None
            if kind == "mqtt":
                broker = stack.enter_context(private_broker(work))
                config.mqtt_url = broker.url
            elif kind == INTO_SQLITE:
                url, landed_db = stack.enter_context(ingest_server(work))
                config.websocket = {"url": url, "token": INGEST_TOKEN}
            else:
                url = stack.enter_context(ack_peer(work))
                config.websocket = {"url": url, "compress": kind == "websocket+deflate"}
            gw = stack.enter_context(Gateway(config))
            gw.wait_healthy()
            result = drain(gw, uplink, count)
        if landed_db is not None:
            with closing(sqlite3.connect(landed_db)) as db:
                (landed,) = db.execute("SELECT count(*) FROM readings").fetchone()
            if landed != count:
                raise BenchError(f"{kind}: {landed} of {count} readings in the database")
        return {**result, "kind": kind}
    finally:
        link.close()
        shutil.rmtree(work, ignore_errors=True)


def deflate_ratio(readings: int = 1000) -> float:
    """A batch of counter readings as prefill makes them, deflated as permessage-deflate does."""
    now = time.time()
    stored = [
        StoredReading(
            seq,
            "backlog-1",
            b'{"seq":%d,"ts":%r,"device":"backlog-1","sensor":"n","value":%d}' % (seq, now, seq),
        )
        for seq in range(1, readings + 1)
    ]
    frame = batch_frame("gw-bench", 1, readings, stored)
    packer = zlib.compressobj(wbits=-15)
    packed = packer.compress(frame) + packer.flush(zlib.Z_SYNC_FLUSH)
    return len(frame) / len(packed)


def run_ws_uplink(plan: Plan) -> BenchResult:
    count = plan.backlog_sizes[1]
    kinds = ("mqtt", "websocket", "websocket+deflate", INTO_SQLITE)
    runs = {kind: measure(kind, count) for kind in kinds}
    base = runs["mqtt"]["per_s"]
    figures = [
        Figure(BENCH, f"MQTT uplink, {count:,} backlog", "readings/s", base, note="PUBACK"),
        Figure(
            BENCH,
            f"WebSocket uplink, {count:,} backlog",
            "readings/s",
            runs["websocket"]["per_s"],
            target=base,
            goal="min",
            baseline=base,
            note="ack on receipt",
        ),
        Figure(
            BENCH,
            "WebSocket uplink, permessage-deflate",
            "readings/s",
            runs["websocket+deflate"]["per_s"],
            baseline=base,
        ),
        Figure(
            BENCH,
            "WebSocket uplink into SQLite via edge-gateway ingest",
            "readings/s",
            runs[INTO_SQLITE]["per_s"],
            baseline=base,
            note="ack after the commit",
        ),
        Figure(BENCH, "deflate ratio of a 1,000-reading batch", "x", deflate_ratio()),
    ]
    for kind, run in runs.items():
        figures.append(
            Figure(BENCH, f"gateway CPU while draining, {kind}", "%", run["gateway_cpu_percent"])
        )
    return BenchResult(BENCH, figures, {"runs": runs})
