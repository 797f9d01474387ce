"""The consumer's counters and its small ``/metrics`` endpoint (Prometheus text format)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from gateway.metrics import Exposition


@dataclass
class ConsumerStats:
    messages: int = 0
    batches: int = 0
    rows_landed: int = 0  # new rows the database took
    rows_duplicate: int = 0  # rows it already held: redeliveries and resent readings
    hostile: Counter[str] = field(default_factory=Counter)  # parked messages by kind
    database_errors: int = 0
    gaps_open: dict[str, int] = field(default_factory=dict)  # gateway -> holes reported open
    gaps_reported: int = 0
    resend_requests: int = 0
    resend_failures: int = 0
    connected: bool = False

    def render(self) -> str:
        out = Exposition()

        def counter(name: str, help_text: str, value: int) -> None:
            out.metric(name, "counter", help_text, [({}, value)])

        counter(
            "edge_consumer_messages_total",
            "Telemetry messages taken from the broker",
            self.messages,
        )
        counter("edge_consumer_batches_total", "Batches committed to the database", self.batches)
        counter("edge_consumer_rows_landed_total", "Readings newly stored", self.rows_landed)
        counter(
            "edge_consumer_rows_duplicate_total",
            "Readings already stored (same gateway and seq), skipped",
            self.rows_duplicate,
        )
        out.metric(
            "edge_consumer_hostile_messages_total",
            "counter",
            "Messages that are not telemetry, parked with their raw bytes",
            [({"kind": kind}, n) for kind, n in sorted(self.hostile.items())] or [({}, 0)],
        )
        counter(
            "edge_consumer_database_errors_total",
            "Batches the database refused; their messages are delivered again",
            self.database_errors,
        )
        out.metric(
            "edge_consumer_seq_gaps_open",
            "gauge",
            "Seq holes older than the gap age, per gateway",
            [({"gateway": gw}, n) for gw, n in sorted(self.gaps_open.items())] or [({}, 0)],
        )
        counter("edge_consumer_seq_gaps_reported_total", "Seq holes reported", self.gaps_reported)
        counter(
            "edge_consumer_resend_requests_total", "resend commands published", self.resend_requests
        )
        counter(
            "edge_consumer_resend_failures_total",
            "resend commands that could not be published",
            self.resend_failures,
        )
        out.metric(
            "edge_consumer_broker_connected", "gauge", "1 while consuming", [({}, self.connected)]
        )
        return out.render()


async def serve_metrics(stats: ConsumerStats, host: str, port: int) -> web.AppRunner:
    """Start ``GET /metrics`` and ``GET /healthz`` on host:port; the caller cleans the runner up."""

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=stats.render(), content_type="text/plain", charset="utf-8")

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"connected": stats.connected, "messages": stats.messages})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
