"""`edge-gateway demo`: the whole product on one machine, no root, no hardware.

Simulated devices on pseudo-terminals feed the real gateway through a real
configuration file; a private mosquitto plays the cloud when one is installed,
otherwise the demo runs offline and shows the log buffering.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from gateway.app import Gateway, signals_handled
from gateway.config import load_config
from gateway.logs import setup_logging
from simulators import PtyDevice
from simulators.modbus_bus import ModbusBus, meter_register_keys

# (device id, simulator kind, lines per second)
DEMO_DEVICES = (
    ("thermo-1", "thermo", 2.0),
    ("thermo-2", "thermo", 1.0),
    ("counter-1", "counter", 5.0),
)
# An energy meter on a simulated RS-485 bus, polled for the registers a technician looks
# at first (one request: they are adjacent), and a GPS receiver driving a circle, one fix
# a second, its position once per fix. Both light enough for a Raspberry Pi.
METER_ID = "meter-1"
# The setpoint is writable: the dashboard's command panel can set it (0 to 100).
METER_SENSORS = ("voltage", "current", "power", "energy", "setpoint")
SETPOINT_RANGE = (0.0, 100.0)
METER_POLL = "1s"
GPS_ID = "gps-1"
GPS_RATE = 1.0
GPS_SENTENCES = ["GGA", "VTG"]
REPORT_EVERY = 5.0
SUBSCRIBE_TIMEOUT = 10.0


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir",
        type=Path,
        help="where the demo keeps its configuration, data and device links "
        "(default: a new temporary directory)",
    )
    p.add_argument("--port", type=int, default=8080, help="dashboard port (a free one if taken)")
    p.add_argument(
        "--offline", action="store_true", help="run without a broker even if mosquitto exists"
    )
    p.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: Ctrl-C)"
    )


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    root: Path = args.dir or Path(tempfile.mkdtemp(prefix="edge-gateway-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_demo(args, root))


def _port_or_free(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


def _mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


@contextlib.contextmanager
def _private_broker(root: Path, binary: str) -> Iterator[int]:
    """A mosquitto on a free loopback port, stopped when the demo ends."""
    port = _port_or_free(0)
    conf = root / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    # The binary comes from PATH or sbin and every argument is ours.
    proc = subprocess.Popen(  # noqa: S603
        [binary, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=(root / "mosquitto.log").open("wb"),
    )
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class CloudView:
    """What the 'cloud' subscriber has seen, updated from paho's thread."""

    readings: int = 0
    last_seq: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    subscribed: threading.Event = field(default_factory=threading.Event)

    def on_subscribe(self, *_args: object) -> None:
        self.subscribed.set()

    def on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            readings = json.loads(msg.payload)["readings"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.readings += len(readings)
            self.last_seq = max(self.last_seq, *(r["seq"] for r in readings))


@contextlib.contextmanager
def _cloud_subscriber(port: int, view: CloudView) -> Iterator[None]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-cloud")
    client.on_message = view.on_message
    client.on_subscribe = view.on_subscribe
    client.on_connect = lambda c, *_: c.subscribe("edge/+/+/telemetry", qos=1)
    client.connect_async("127.0.0.1", port)
    client.loop_start()
    try:
        yield
    finally:
        client.disconnect()
        client.loop_stop()


@contextlib.asynccontextmanager
async def _devices(root: Path) -> AsyncIterator[list[dict[str, object]]]:
    """The simulated devices, running; yields the ``[[devices]]`` that read them."""
    async with contextlib.AsyncExitStack() as stack:
        devices: list[dict[str, object]] = []
        for device_id, kind, rate in DEMO_DEVICES:
            link = root / "dev" / device_id
            await stack.enter_async_context(PtyDevice(kind, link, rate=rate))
            device: dict[str, object] = {
                "id": device_id,
                "driver": "serial_line",
                "port": str(link),
                "baudrate": 9600,
                "format": "kv",
                "expected_interval": 2.0,
            }
            if kind == "thermo":
                device["units"] = {"t": "°C", "h": "%"}
            devices.append(device)
        bus = await stack.enter_async_context(ModbusBus(root / "dev" / "rs485", [1]))
        devices.append(
            {
                "id": METER_ID,
                "driver": "modbus_rtu",
                "port": str(bus.link),
                "baudrate": bus.baudrate,
                "slave_id": 1,
                "poll_interval": METER_POLL,
                "expected_interval": 2.0,
                "registers": meter_register_keys(METER_SENSORS),
            }
        )
        gps = await stack.enter_async_context(
            PtyDevice("gps", root / "dev" / GPS_ID, rate=GPS_RATE)
        )
        devices.append(
            {
                "id": GPS_ID,
                "driver": "nmea",
                "port": str(gps.link),
                "baudrate": 9600,
                "sentences": GPS_SENTENCES,
                "expected_interval": 2.0,
            }
        )
        yield devices


def _write_config(
    root: Path, devices: list[dict[str, object]], port: int, token: str, broker: int | None
) -> Path:
    config: dict[str, object] = {
        "gateway": {"id": "demo-gw", "data_dir": str(root / "data")},
        "devices": devices,
    }
    if broker is not None:
        config["uplink"] = {"mqtt": {"url": f"mqtt://127.0.0.1:{broker}", "topic_prefix": "edge"}}
    config["local"] = {"listen": f"127.0.0.1:{port}", "token": token}
    low, high = SETPOINT_RANGE
    config["commands"] = {
        "allow": ["ping", "device.read", "device.write"],
        "writes": [{"device": METER_ID, "sensor": "setpoint", "min": low, "max": high}],
    }
    path = root / "gateway.toml"
    path.write_text(
        "# Written by `edge-gateway demo`: a real configuration you can copy.\n"
        + tomli_w.dumps(config),
        encoding="utf-8",
    )
    return path


async def _report(gateway: Gateway, cloud: CloudView | None) -> None:
    while True:
        await asyncio.sleep(REPORT_EVERY)
        if gateway.store is None:
            continue
        stats = gateway.store.stats()
        line = f"log: last seq {stats.last_seq}"
        if cloud is None:
            # No uplink consumes the log, so nothing counts as unsent.
            line += " (offline: the readings stay in the log)"
        else:
            with cloud.lock:
                line += (
                    f", unsent {stats.depth} | cloud received {cloud.readings} readings, "
                    f"last seq {cloud.last_seq}"
                )
        print(line, flush=True)


async def _demo(args: argparse.Namespace, root: Path) -> int:
    port = _port_or_free(args.port)
    token = secrets.token_urlsafe(18)
    binary = None if args.offline else _mosquitto_binary()
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(_private_broker(root, binary)) if binary else None
        cloud = CloudView() if broker is not None else None
        if broker is not None and cloud is not None:
            stack.enter_context(_cloud_subscriber(broker, cloud))
            # Counting starts from the first reading only if the subscription is in place.
            if not await asyncio.to_thread(cloud.subscribed.wait, SUBSCRIBE_TIMEOUT):
                print("the private broker did not answer; running on anyway", file=sys.stderr)
        async with _devices(root) as devices:
            config = _write_config(root, devices, port, token, broker)
            gateway = Gateway(load_config(config))
            print(f"edge-gateway demo in {root}")
            print(f"  configuration: {config}")
            names = ", ".join(f"{d['id']} on {d['port']}" for d in devices)
            print(f"  devices: {names}")
            if broker is not None:
                print(f"  cloud: private mosquitto on mqtt://127.0.0.1:{broker}")
            else:
                print("  cloud: none (no mosquitto found, or --offline): the log buffers")
            print(f"  dashboard: http://127.0.0.1:{port}/#token={token}")
            print("Stop with Ctrl-C.", flush=True)
            with signals_handled(gateway):
                async with asyncio.TaskGroup() as group:
                    reporter = group.create_task(_report(gateway, cloud), name="demo-report")
                    if args.duration > 0:
                        asyncio.get_running_loop().call_later(args.duration, gateway.request_stop)
                    code = await gateway.run()
                    reporter.cancel()
    print(f"demo stopped; its files stay in {root}", file=sys.stderr)
    return code
