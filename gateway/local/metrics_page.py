"""The /metrics scrape: every counter of the running gateway in Prometheus text format."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from gateway import __version__
from gateway.interfaces import CommandStatus, DeviceFigure, DeviceStatus, GatewayView
from gateway.local.connections import ConnectionCounters
from gateway.local.health import uplink_down_seconds
from gateway.local.stream import StreamCounters
from gateway.metrics import Exposition, Families


@dataclass(frozen=True, slots=True)
class ProcessStats:
    cpu_seconds: float
    resident_bytes: int
    open_fds: int
    start_time: float


@functools.cache
def _boot_time() -> int:
    """When the machine booted (epoch seconds): read once, it does not change."""
    with open("/proc/stat", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("btime "))


def read_process_stats() -> ProcessStats | None:
    """This process's figures from /proc (blocking: call it off the event loop).

    None where /proc is not there (not Linux), so /metrics still answers.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            # The command name may hold spaces; the fields after its closing ")" do not.
            fields = f.read().rpartition(")")[2].split()
        with open("/proc/self/statm", encoding="ascii") as f:
            resident_pages = int(f.read().split()[1])
        boot_time = _boot_time()
        open_fds = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # Fields counted from "state" (field 3 of proc(5)): utime 14, stime 15, starttime 22.
    utime, stime, start_ticks = int(fields[11]), int(fields[12]), int(fields[19])
    return ProcessStats(
        cpu_seconds=(utime + stime) / ticks,
        resident_bytes=resident_pages * os.sysconf("SC_PAGE_SIZE"),
        open_fds=open_fds,
        start_time=boot_time + start_ticks / ticks,
    )


def render(
    view: GatewayView,
    counters: StreamCounters,
    process: ProcessStats | None,
    now: float,
    connections: ConnectionCounters | None = None,
) -> str:
    out = Exposition()
    declare(out, view, counters, process, now, connections=connections)
    return out.render()


def declare(
    out: Families,
    view: GatewayView,
    counters: StreamCounters,
    process: ProcessStats | None,
    now: float,
    *,
    connections: ConnectionCounters | None = None,
) -> None:
    """Every family of the scrape, with its samples, declared into ``out``."""
    out.metric(
        "edge_gateway_info",
        "gauge",
        "Gateway identity; always 1.",
        [({"gateway": view.gateway_id, "version": __version__}, 1)],
    )
    _devices(out, view)
    _store(out, view, now)
    _uplinks(out, view, now)
    if view.commands is not None:
        _commands(out, view.commands.status)
    out.metric(
        "edge_gateway_local_clients", "gauge", "Connected stream clients.", [({}, counters.clients)]
    )
    out.metric(
        "edge_gateway_local_gaps_total",
        "counter",
        "Gaps told to stream clients that fell behind.",
        [({}, counters.gaps)],
    )
    out.metric(
        "edge_gateway_local_closed_slow_total",
        "counter",
        "Stream clients closed because they stayed stuck.",
        [({}, counters.closed_slow)],
    )
    out.metric(
        "edge_gateway_local_inbound_errors_total",
        "counter",
        "Stream messages from clients that were refused, or that closed their connection.",
        [({}, counters.inbound_errors)],
    )
    if connections is not None:
        _connections(out, connections)
    if process is not None:
        out.metric(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time.",
            [({}, process.cpu_seconds)],
        )
        out.metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size.",
            [({}, process.resident_bytes)],
        )
        out.metric("process_open_fds", "gauge", "Open file descriptors.", [({}, process.open_fds)])
        out.metric(
            "process_start_time_seconds",
            "gauge",
            "Start time since the epoch.",
            [({}, process.start_time)],
        )


def _devices(out: Families, view: GatewayView) -> None:
    ids = sorted(view.devices)
    status = {i: view.devices[i].status for i in ids}
    expected = {d.id: d.expected_interval for d in view.settings.devices}
    out.metric(
        "edge_gateway_device_up",
        "gauge",
        "1 while the device's port is open.",
        [({"device": i}, int(status[i].state == "open")) for i in ids],
    )
    out.metric(
        "edge_gateway_device_readings_total",
        "counter",
        "Readings read.",
        [({"device": i}, status[i].readings) for i in ids],
    )
    out.metric(
        "edge_gateway_device_errors_total",
        "counter",
        "Dead letters and read errors.",
        [({"device": i}, status[i].errors) for i in ids],
    )
    out.metric(
        "edge_gateway_device_reconnects_total",
        "counter",
        "Port reopenings.",
        [({"device": i}, status[i].reconnects) for i in ids],
    )
    out.metric(
        "edge_gateway_device_refused_names_total",
        "counter",
        "Samples whose sensor name was refused (bad, or beyond the per-device bound).",
        [({"device": i}, status[i].refused_names) for i in ids],
    )
    out.metric(
        "edge_gateway_device_pauses_total",
        "counter",
        "Times reading paused because the store was congested (backpressure).",
        [({"device": i}, status[i].pauses) for i in ids],
    )
    out.metric(
        "edge_gateway_device_last_reading_timestamp_seconds",
        "gauge",
        "When the device's last reading was read.",
        [({"device": i}, ts) for i in ids if (ts := status[i].last_reading_ts) is not None],
    )
    out.metric(
        "edge_gateway_device_expected_interval_seconds",
        "gauge",
        "Configured interval between readings (0 = not expected).",
        [({"device": i}, expected.get(i, 0.0)) for i in ids],
    )
    _device_figures(out, status)


def _device_figures(out: Families, status: Mapping[str, DeviceStatus]) -> None:
    """The figures drivers add for their devices, one family per name."""
    families: dict[str, list[tuple[str, DeviceFigure]]] = {}
    for device, st in status.items():
        for figure in st.detail.figures() if st.detail is not None else []:
            families.setdefault(figure.name, []).append((device, figure))
    for name, members in sorted(families.items()):
        first = members[0][1]
        out.metric(
            f"edge_gateway_device_{name}",
            first.kind,
            first.help,
            [({"device": device, **dict(f.labels)}, f.value) for device, f in members],
        )


def _store(out: Families, view: GatewayView, now: float) -> None:
    stats = view.log.stats()
    oldest_age = 0.0 if stats.oldest_unsent_ts is None else max(0.0, now - stats.oldest_unsent_ts)
    gauges: list[tuple[str, str, str, float]] = [
        (
            "edge_gateway_store_depth",
            "gauge",
            "Readings not yet acknowledged by every uplink.",
            stats.depth,
        ),
        ("edge_gateway_store_bytes", "gauge", "Size of the database files.", stats.bytes),
        ("edge_gateway_store_last_seq", "gauge", "Highest committed seq.", stats.last_seq),
        (
            "edge_gateway_store_dropped_total",
            "counter",
            "Readings dropped by bounds, overflow policy, a full disk or a damaged database.",
            stats.dropped,
        ),
        (
            "edge_gateway_store_dead_letters_total",
            "counter",
            "Input that could not become a reading.",
            stats.dead_letters,
        ),
        (
            "edge_gateway_store_oldest_unsent_age_seconds",
            "gauge",
            "Age of the oldest reading not yet acknowledged (0 when none).",
            oldest_age,
        ),
        (
            "edge_gateway_store_degraded",
            "gauge",
            "1 while the store is degraded.",
            int(stats.degraded is not None),
        ),
        ("edge_gateway_store_commits_total", "counter", "Transactions committed.", stats.commits),
        (
            "edge_gateway_store_committed_readings_total",
            "counter",
            "Readings committed.",
            stats.committed_readings,
        ),
        (
            "edge_gateway_store_commit_seconds_total",
            "counter",
            "Time spent committing.",
            stats.commit_seconds,
        ),
        (
            "edge_gateway_store_dead_letters_lost_total",
            "counter",
            "Dead letters counted whose raw bytes were lost (memory bound, failing disk).",
            stats.dead_letters_lost,
        ),
        (
            "edge_gateway_store_moved_aside_total",
            "counter",
            "Damaged databases moved aside and replaced by a fresh log.",
            stats.moved_aside,
        ),
        (
            "edge_gateway_store_integrity_checks_total",
            "counter",
            "Background integrity checks run to the end.",
            stats.integrity_checks,
        ),
    ]
    for name, kind, help_text, value in gauges:
        out.metric(name, kind, help_text, [({}, value)])
    out.metric(
        "edge_gateway_store_moved_aside_timestamp_seconds",
        "gauge",
        "When a damaged database was last moved aside, with SQLite's reason.",
        []
        if stats.moved_aside_at is None
        else [({"reason": stats.moved_aside_reason or ""}, stats.moved_aside_at)],
    )
    out.metric(
        "edge_gateway_store_free_bytes",
        "gauge",
        "Free bytes on the data directory's filesystem.",
        [] if stats.free_bytes is None else [({}, stats.free_bytes)],
    )


def _uplinks(out: Families, view: GatewayView, now: float) -> None:
    names = sorted(view.uplinks)
    status = {n: view.uplinks[n].status for n in names}
    out.metric(
        "edge_gateway_uplink_connected",
        "gauge",
        "1 while connected.",
        [({"uplink": n}, int(status[n].state == "connected")) for n in names],
    )
    out.metric(
        "edge_gateway_uplink_acked_seq",
        "gauge",
        "Highest seq acknowledged in order.",
        [({"uplink": n}, status[n].acked_seq) for n in names],
    )
    out.metric(
        "edge_gateway_uplink_in_flight",
        "gauge",
        "Messages awaiting acknowledgement.",
        [({"uplink": n}, status[n].in_flight) for n in names],
    )
    out.metric(
        "edge_gateway_uplink_published_messages_total",
        "counter",
        "Messages acknowledged.",
        [({"uplink": n}, status[n].published_messages) for n in names],
    )
    out.metric(
        "edge_gateway_uplink_published_readings_total",
        "counter",
        "Readings acknowledged.",
        [({"uplink": n}, status[n].published_readings) for n in names],
    )
    out.metric(
        "edge_gateway_uplink_errors_total",
        "counter",
        "Connection and publish errors.",
        [({"uplink": n}, status[n].errors) for n in names],
    )
    out.metric(
        "edge_gateway_uplink_lost_readings_total",
        "counter",
        "Readings deleted from the log (bounds, or retention past a best-effort uplink) "
        "before the uplink sent them.",
        [({"uplink": n}, status[n].lost) for n in names],
    )
    out.metric(
        "edge_gateway_uplink_resent_readings_total",
        "counter",
        "Readings sent again by the resend command.",
        [({"uplink": n}, status[n].resent) for n in names],
    )
    out.metric(
        "edge_gateway_uplink_down_seconds",
        "gauge",
        "Seconds without a connection (0 while connected).",
        [({"uplink": n}, uplink_down_seconds(view, n, now)) for n in names],
    )
    out.histogram(
        "edge_gateway_uplink_publish_latency_seconds",
        "Seconds from commit to the peer's acknowledgement.",
        [({"uplink": n}, status[n].publish_latency) for n in names],
    )


def _commands(out: Families, status: CommandStatus) -> None:
    out.metric(
        "edge_gateway_commands_total",
        "counter",
        'Commands run, by command and outcome ("ok" or "failed").',
        [({"command": c, "outcome": o}, n) for (c, o), n in sorted(status.executed.items())],
    )
    out.metric(
        "edge_gateway_commands_refused_total",
        "counter",
        "Command requests answered without running, by reason.",
        [({"reason": r}, n) for r, n in sorted(status.refused.items())],
    )
    out.metric(
        "edge_gateway_commands_duplicates_total",
        "counter",
        "Command requests whose id was answered before: the stored answer was sent again.",
        [({}, status.duplicates)],
    )


def _connections(out: Families, counters: ConnectionCounters) -> None:
    out.metric(
        "edge_gateway_local_connections", "gauge", "Open HTTP connections.", [({}, counters.open)]
    )
    out.metric(
        "edge_gateway_local_connections_limit",
        "gauge",
        "Most HTTP connections at once (max_connections, lowered to fit the fd limit).",
        [({}, counters.limit)],
    )
    out.metric(
        "edge_gateway_local_connections_refused_total",
        "counter",
        "Connections closed at once: every slot busy (limit) or too many from one address.",
        [({"reason": r}, counters.refused[r]) for r in ("limit", "per_address")],
    )
    out.metric(
        "edge_gateway_local_connections_evicted_total",
        "counter",
        "Idle connections closed to make room for a new one.",
        [({}, counters.evicted)],
    )
    out.metric(
        "edge_gateway_local_connections_timed_out_total",
        "counter",
        "Connections closed because a request head did not arrive within header_timeout.",
        [({}, counters.timed_out)],
    )
    out.metric(
        "edge_gateway_local_requests_refused_total",
        "counter",
        "Requests refused, by HTTP status (400 bad parameter, 401 token, 403 origin or host).",
        [
            ({"code": c}, counters.requests_refused[c])
            for c in sorted({"400", "401", "403", *counters.requests_refused})
        ],
    )
