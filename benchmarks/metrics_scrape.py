"""What one /metrics scrape costs: the gateway's own text exposition against prometheus_client.

``python -m benchmarks.metrics_scrape [--devices N] [--clients N] [--scrapes N]``

A gateway with ``--devices`` devices, one MQTT uplink with a filled latency histogram,
``--clients`` stream clients and a real store is scraped ``--scrapes`` times each way,
alternating, in this process: the baseline is the page as the gateway renders it
(``metrics_page.render``); the candidate declares the same families into a
prometheus_client custom collector (a ``MetricFamily`` per family, built at collect
time from the same counters, no global registry) and renders it with
``generate_latest``. Also measured: what importing prometheus_client adds to a process
that has imported the gateway (time and resident memory, in a subprocess). Prints a
table and the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.interfaces import DeviceStatus, GatewayView, UplinkStatus
from gateway.local.connections import ConnectionCounters
from gateway.local.metrics_page import ProcessStats, declare, read_process_stats, render
from gateway.local.stream import StreamCounters
from gateway.metrics import Histogram, Samples
from gateway.reading import Sample
from gateway.settings import DeviceSettings, MqttSettings, Settings, StoreSettings, UplinkSettings
from gateway.store import Store


class _Families:
    """The page's families as prometheus_client metric families."""

    def __init__(self) -> None:
        self.built: list[Metric] = []

    def metric(self, name: str, kind: str, help_text: str, samples: Samples) -> None:
        family: CounterMetricFamily | GaugeMetricFamily | None = None
        for labels, value in samples:
            if family is None:
                family = _family(name, kind, help_text, list(labels))
            family.add_metric(list(labels.values()), value)
        self.built.append(family or _family(name, kind, help_text, []))

    def histogram(
        self, name: str, help_text: str, series: Iterable[tuple[Mapping[str, str], Histogram]]
    ) -> None:
        family: HistogramMetricFamily | None = None
        for labels, hist in series:
            if family is None:
                family = HistogramMetricFamily(name, help_text, labels=list(labels))
            buckets = [(_le(bound), float(count)) for bound, count in hist.cumulative()]
            family.add_metric(list(labels.values()), buckets, hist.sum)
        self.built.append(family or HistogramMetricFamily(name, help_text, labels=[]))


def _family(
    name: str, kind: str, help_text: str, labels: list[str]
) -> CounterMetricFamily | GaugeMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class _GatewayCollector(Collector):
    def __init__(
        self,
        view: GatewayView,
        counters: StreamCounters,
        process: ProcessStats | None,
        connections: ConnectionCounters,
    ) -> None:
        self._args = (view, counters, process, connections)

    def collect(self) -> Iterator[Metric]:
        view, counters, process, connections = self._args
        families = _Families()
        declare(families, view, counters, process, time.time(), connections=connections)
        yield from families.built


class _Part:
    """A device or an uplink as the page sees it: its status, nothing else."""

    def __init__(self, status: DeviceStatus | UplinkStatus) -> None:
        self.status = status


def _view(store: Store, devices: int) -> GatewayView:
    ids = [f"sensor-{i:02d}" for i in range(devices)]
    settings = Settings(
        devices=tuple(
            DeviceSettings(id=i, driver="serial_line", expected_interval=1.0) for i in ids
        ),
        uplink=UplinkSettings(mqtt=MqttSettings()),
    )
    uplink = UplinkStatus(state="connected", published_messages=10_000, connected_since=1.0)
    for n in range(1_000):
        uplink.publish_latency.observe(0.0005 * (n % 40))
    # The page reads only each part's status, so a holder of one stands in for drivers
    # and uplinks (hence the ignores).
    return GatewayView(
        settings=settings,
        log=store,
        devices={
            i: _Part(DeviceStatus(state="open", readings=12_345, last_reading_ts=time.time()))  # type: ignore[misc]
            for i in ids
        },
        uplinks={"mqtt": _Part(uplink)},  # type: ignore[dict-item]
        started=time.time(),
    )


def _import_cost() -> dict[str, float]:
    """Seconds and resident KiB that ``import prometheus_client`` adds to a process that
    has imported the gateway already (what it would add to a running gateway)."""
    probe = (
        "import resource, time\n"
        "import gateway.app\n"
        "def rss():\n"
        "    with open('/proc/self/statm') as f:\n"
        "        return int(f.read().split()[1]) * resource.getpagesize() // 1024\n"
        "before, t = rss(), time.perf_counter()\n"
        "import prometheus_client\n"
        "print(time.perf_counter() - t, rss() - before)\n"
    )
    runs = []
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.split()
        runs.append((float(out[0]), float(out[1])))
    return {
        "import_ms": statistics.median(r[0] for r in runs) * 1e3,
        "import_rss_kib": statistics.median(r[1] for r in runs),
    }


async def measure(devices: int, clients: int, scrapes: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "readings.db", StoreSettings())
        try:
            now = time.time()
            store.put_samples(
                [
                    Sample(device=f"sensor-{i % devices:02d}", sensor="t", value=i, ts=now)
                    for i in range(1_000)
                ]
            )
            await store.flush()
            view = _view(store, devices)
            counters = StreamCounters(clients=clients)
            connections = ConnectionCounters(open=clients + 2, limit=1024)
            process = read_process_stats()
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_GatewayCollector(view, counters, process, connections))

            def baseline() -> bytes:
                return render(view, counters, process, time.time(), connections).encode()

            def candidate() -> bytes:
                return generate_latest(registry)

            ways = {"hand-written (baseline)": baseline, "prometheus_client": candidate}
            times: dict[str, list[float]] = {name: [] for name in ways}
            sizes = {name: len(way()) for name, way in ways.items()}
            for _ in range(scrapes):
                for name, way in ways.items():
                    started = time.perf_counter()
                    way()
                    times[name].append(time.perf_counter() - started)
        finally:
            await store.close()
    rows = [
        {
            "way": name,
            "median_us": statistics.median(t) * 1e6,
            "p99_us": sorted(t)[int(len(t) * 0.99)] * 1e6,
            "page_bytes": sizes[name],
        }
        for name, t in times.items()
    ]
    return {
        "devices": devices,
        "stream_clients": clients,
        "scrapes": scrapes,
        "python": sys.version.split()[0],
        "rows": rows,
        **_import_cost(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_scrape")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=2_000)
    args = parser.parse_args()
    result = asyncio.run(measure(args.devices, args.clients, args.scrapes))
    print(f"/metrics scrape, {args.devices} devices, {args.clients} stream clients")
    print(f"{'way':<26}{'median µs':>12}{'p99 µs':>12}{'page bytes':>12}")
    for row in result["rows"]:  # type: ignore[attr-defined]
        print(
            f"{row['way']:<26}{row['median_us']:>12.0f}{row['p99_us']:>12.0f}"
            f"{row['page_bytes']:>12}"
        )
    print(
        f"import prometheus_client: {result['import_ms']:.0f} ms, "
        f"+{result['import_rss_kib']:.0f} KiB resident"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
