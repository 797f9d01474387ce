"""``edge-gateway fleet-sim N --broker URL --dir DIR``: N real gateways on this machine.

Runs until ``--duration`` or SIGINT/SIGTERM, then pauses the simulated devices, waits
until every gateway's log is acknowledged by the broker (``--drain``), stops every
gateway cleanly and writes ``DIR/fleet-report.json``: memory and CPU per gateway, the
faults applied, and each store's last seq and unsent readings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gateway.config import LOG_LEVELS
from gateway.errors import GatewayError
from gateway.fleet.faults import Fault, parse_fault

try:
    from gateway.fleet.fleet import Fleet, FleetOptions, Usage
    from gateway.fleet.usage import Spread, cpu_percent
except ModuleNotFoundError as exc:  # psutil: an extra, not needed to run a gateway
    raise GatewayError(f"fleet-sim needs {exc.name}: pip install 'edge-gateway[fleet]'") from None

REPORT_NAME = "fleet-report.json"
TARGETS_NAME = "prometheus-targets.json"
MIB = 1024 * 1024


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def _gateways(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 9999:
        raise argparse.ArgumentTypeError(f"must be 1 to 9999, not {text}")
    return value


def _fault(text: str) -> Fault:
    try:
        return parse_fault(text)
    except GatewayError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n", 1)[1] if __doc__ else None
    p.add_argument("count", type=_gateways, metavar="N", help="how many gateways")
    p.add_argument(
        "--broker",
        required=True,
        action="append",
        metavar="URL",
        help="the fleet's broker, mqtt://HOST[:PORT]; repeat for each node of a cluster: "
        "gateway i connects to node i mod n, and to the next when that one refuses",
    )
    p.add_argument(
        "--mqtt-protocol",
        choices=("5", "3.1.1"),
        default="5",
        help='the gateways\' MQTT version (default 5; "3.1.1" for RabbitMQ)',
    )
    p.add_argument(
        "--dir",
        type=Path,
        required=True,
        help="where each gateway gets its directory (configuration, data, log, device links)",
    )
    p.add_argument(
        "--rate", type=_positive, default=1.0, help="readings per second per device (default 1)"
    )
    p.add_argument(
        "--devices", type=int, choices=(1, 2), default=1, help="simulated devices per gateway"
    )
    p.add_argument(
        "--duration", type=_positive, help="seconds to run once all have started (default: Ctrl-C)"
    )
    p.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="SPEC",
        help="kill9:FRACTION@T (SIGKILL that share of the gateways T s after the start, then "
        "restart them) or blackhole:FRACTION@T+D (drop their link's bytes for D s); repeatable",
    )
    p.add_argument(
        "--restart-after",
        type=float,
        default=1.0,
        metavar="S",
        help="how long a killed gateway stays down (default 1)",
    )
    p.add_argument(
        "--local-ports",
        type=int,
        metavar="BASE",
        help="run each gateway's local server, gateway i on port BASE+i-1 (default: none)",
    )
    p.add_argument("--topic-prefix", default="edge", help="MQTT topic prefix (default edge)")
    p.add_argument(
        "--drain",
        type=float,
        default=60.0,
        metavar="S",
        help="at the end, wait up to S s for every log to be acknowledged (0: do not wait)",
    )
    p.add_argument(
        "--starting-at-once",
        type=int,
        default=4,
        metavar="K",
        help="gateways starting at the same time (default 4)",
    )
    p.add_argument(
        "--report-every", type=_positive, default=10.0, metavar="S", help="progress line period"
    )
    p.add_argument("--seed", type=int, help="seed for which gateways a fault hits")
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="WARNING",
        help="the gateways' log level (default WARNING)",
    )


def run(args: argparse.Namespace) -> int:
    options = FleetOptions(
        count=args.count,
        broker_url=args.broker[0],
        more_brokers=tuple(args.broker[1:]),
        mqtt_protocol=args.mqtt_protocol,
        directory=args.dir,
        rate=args.rate,
        devices=args.devices,
        topic_prefix=args.topic_prefix,
        local_port_base=args.local_ports,
        starting_at_once=max(1, args.starting_at_once),
        seed=args.seed,
        log_level=args.log_level,
    )
    return asyncio.run(_run(options, args))


async def _run(options: FleetOptions, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    began = time.monotonic()
    async with Fleet(options) as fleet:
        _say(f"starting {options.count} gateway(s) in {options.directory} ...")
        if not await _until_stopped(fleet.start(), stop):
            _say("stopped while starting")
            return 0
        _say(f"all {options.count} started in {time.monotonic() - began:.0f} s")
        if options.local_port_base is not None:
            _write_targets(fleet)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_report_every(fleet, args.report_every))]
            tasks += [
                group.create_task(_fault_at(fleet, fault, args.restart_after))
                for fault in args.fault
            ]
            if args.duration:
                loop.call_later(args.duration, stop.set)
            await stop.wait()
            for task in tasks:
                task.cancel()
        await asyncio.to_thread(fleet.sample_usage_now)
        await fleet.heal()
        drained = None
        if args.drain > 0:
            fleet.pause_devices()
            _say(f"devices paused; waiting up to {args.drain:g} s for every log to be sent")
            try:
                async with asyncio.timeout(args.drain):
                    await fleet.drain()
                drained = True
            except TimeoutError:
                drained = False
        await fleet.stop()
        report = await asyncio.to_thread(_report, fleet, drained)
    path = options.directory / REPORT_NAME
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _say(_summary(report))
    _say(f"report: {path}")
    return 0 if drained is not False and not report["unexpected_exits"] else 1


async def _until_stopped(start: Any, stop: asyncio.Event) -> bool:
    """Run ``start``; False if ``stop`` came first (``start`` is then cancelled)."""
    starting = asyncio.ensure_future(start)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    return False


async def _fault_at(fleet: Fleet, fault: Fault, restart_after: float) -> None:
    await asyncio.sleep(max(0.0, fault.at - fleet.elapsed()))
    record = await fleet.apply(fault, restart_after)
    _say(f"t={record.at:.0f}s: {record.kind} of {', '.join(record.gateways)}")


async def _report_every(fleet: Fleet, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        await asyncio.to_thread(fleet.sample_usage_now)
        _say(_progress(fleet))


def _progress(fleet: Fleet) -> str:
    running = sum(m.running for m in fleet.members)
    figures = _usage_figures(fleet)
    parts = [f"t={fleet.elapsed():.0f}s: {running}/{len(fleet.members)} running"]
    if figures["rss_bytes"]:
        parts.append(f"RSS median {figures['rss_bytes']['median'] / MIB:.1f} MiB")
    if figures["pss_bytes"]:
        parts.append(f"PSS median {figures['pss_bytes']['median'] / MIB:.1f} MiB")
    if figures["cpu_percent"]:
        cpu = figures["cpu_percent"]
        parts.append(f"CPU median {cpu['median']:.1f}% (all {cpu['total']:.0f}% of a core)")
    return ", ".join(parts)


def _usage_figures(fleet: Fleet) -> dict[str, Any]:
    # Steady state: members restarted in the window are left out when others remain.
    seen = [u for u in fleet.usage.values() if u.last is not None and not u.restarted] or [
        u for u in fleet.usage.values() if u.last is not None
    ]
    rss = [float(u.last.rss_bytes) for u in seen if u.last]
    pss = [float(u.last.pss_bytes) for u in seen if u.last and u.last.pss_bytes is not None]
    cpu = [cpu_percent(u.first, u.last) for u in seen if u.first and u.last]
    return {
        name: (asdict(spread) if (spread := Spread.of(values)) else None)
        for name, values in (("rss_bytes", rss), ("pss_bytes", pss), ("cpu_percent", cpu))
    }


def _member_usage(seen: Usage | None) -> dict[str, Any]:
    if seen is None or seen.first is None or seen.last is None:
        return {}
    return {
        "rss_bytes": seen.last.rss_bytes,
        "pss_bytes": seen.last.pss_bytes,
        "peak_rss_bytes": seen.peak_rss,
        "peak_pss_bytes": seen.peak_pss or None,
        "cpu_percent": round(cpu_percent(seen.first, seen.last), 2),
        "restarted_in_window": seen.restarted,
    }


def _report(fleet: Fleet, drained: bool | None) -> dict[str, Any]:
    """Everything a run measured (blocking: reads every store)."""
    options = fleet.options
    figures = fleet.store_figures(fleet.members)
    members = [
        {
            "id": member.gateway_id,
            "starts": member.starts,
            "kills": member.kills,
            "unexpected_exits": member.unexpected_exits,
            "last_seq": last_seq,
            "unsent": unsent,
            **_member_usage(fleet.usage.get(member.gateway_id)),
        }
        for member, (last_seq, unsent) in zip(fleet.members, figures, strict=True)
    ]
    own = _member_usage(fleet.own)
    return {
        "gateways": options.count,
        "devices_per_gateway": options.devices,
        "rate_per_device": options.rate,
        "brokers": [options.broker_url, *options.more_brokers],
        "seconds": round(fleet.elapsed(), 1),
        "drained": drained,
        "unsent": sum(unsent for _, unsent in figures),
        "readings": sum(last for last, _ in figures),
        "unexpected_exits": sum(len(m.unexpected_exits) for m in fleet.members),
        "faults": [asdict(f) for f in fleet.faults],
        "usage": _usage_figures(fleet),
        "simulator": own,
        "members": members,
    }


def _summary(report: dict[str, Any]) -> str:
    lines = [
        f"{report['gateways']} gateway(s), {report['readings']} readings committed, "
        f"{report['unsent']} unsent, {report['unexpected_exits']} unexpected exit(s)"
    ]
    usage = report["usage"]
    for name, unit, scale in (
        ("rss_bytes", "MiB", MIB),
        ("pss_bytes", "MiB", MIB),
        ("cpu_percent", "% of a core", 1),
    ):
        if usage[name]:
            u = usage[name]
            lines.append(
                f"  {name.split('_')[0].upper()} per gateway: median {u['median'] / scale:.1f}, "
                f"max {u['max'] / scale:.1f}, all {u['total'] / scale:.0f} {unit}"
            )
    if report["faults"]:
        applied = [
            f"{f['kind']} of {len(f['gateways'])} at {f['at']:.0f}s" for f in report["faults"]
        ]
        lines.append("  faults: " + "; ".join(applied))
    return "\n".join(lines)


def _write_targets(fleet: Fleet) -> None:
    """Prometheus file_sd targets for every gateway's /metrics (docs/fleet.md)."""
    groups = [
        {
            "targets": [f"127.0.0.1:{m.config.local_port}"],
            "labels": {"gateway": m.gateway_id},
        }
        for m in fleet.members
    ]
    (fleet.options.directory / TARGETS_NAME).write_text(json.dumps(groups, indent=1) + "\n")


def _say(text: str) -> None:
    print(f"fleet-sim: {text}" if "\n" not in text else text, file=sys.stderr, flush=True)
