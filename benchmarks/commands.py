"""Command round trip: request published → answer received, idle and under load.

A requester in this process sends ``ping`` and ``status`` to the real gateway through a
private mosquitto, over MQTT 5 (response topic and correlation data) and over MQTT
3.1.1 (answer on the fixed ``cmd/{command}/result`` topic), one request at a time, and
times each from just before the publish to the answer's arrival (``perf_counter`` in
paho's callback). Two runs, each with its own broker and gateway:

- **idle**: the gateway with one silent device;
- **loaded**: counter devices writing 55,000 lines/s in all (the throughput
  benchmark's sustained offer), the readings flowing through the gateway into the
  broker; the rate that actually flowed is measured from the gateway's own
  ``/metrics`` over the window.

The baseline, interleaved with the gateway's requests in the same runs: an echo
process (``python -m benchmarks.commands --port P``) that answers the same
requests straight through the broker, as the gateway does (QoS 1, response topic and
correlation data, or the result topic), with nothing behind it. Its round trip is the
broker's and paho's own: the gateway's figure over it is what the gateway adds.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import signal
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from benchmarks.harness import (
    BenchError,
    Child,
    Gateway,
    GatewayConfig,
    PtyLink,
    counters,
    private_broker,
    python_module,
    scratch_dir,
    thread_cpu,
    thread_percent,
    wait_for,
)
from benchmarks.pipeline import SUSTAINED_OFFER, store_and_uplink_rates
from benchmarks.plan import Plan
from benchmarks.report import BenchResult, Figure
from benchmarks.stats import latency_summary
from tests.support.mosquitto import Mosquitto

GATEWAY_ID = "gw-bench"
GATEWAY_BASE = f"edge/{GATEWAY_ID}/cmd"
ECHO_BASE = "echo/bench/cmd"
REPLIES = "replies/bench"
# Requests of each kind per run (six kinds, interleaved).
REQUESTS = {"full": 200, "quick": 30}
# Pause between two requests: a command is a rare, single request, not a stream.
GAP = 0.01
# An answer not back after this long counts as lost.
ANSWER_TIMEOUT = 10.0
TARGET_IDLE_MS = 50.0
TARGET_LOADED_MS = 200.0
LOAD_TARGET = 50_000.0
# The broker sends small packets at once, as the requester and the echo do (no_delay).
BROKER_CONFIG = ["set_tcp_nodelay true"]
PUBLISHED = 'edge_gateway_uplink_published_readings_total{uplink="mqtt"}'


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of request: who answers, over which protocol, which command."""

    target: str  # "gateway" or "echo"
    protocol: str  # "5" or "3.1.1"
    command: str

    @property
    def label(self) -> str:
        return f"{self.target} {self.command} MQTT {self.protocol}"

    @property
    def base(self) -> str:
        return GATEWAY_BASE if self.target == "gateway" else ECHO_BASE


KINDS = [
    Kind("gateway", "5", "ping"),
    Kind("gateway", "3.1.1", "ping"),
    Kind("gateway", "5", "status"),
    Kind("gateway", "3.1.1", "status"),
    Kind("echo", "5", "ping"),
    Kind("echo", "3.1.1", "ping"),
]


# ---------------------------------------------------------------- the requester


def no_delay(client: mqtt.Client) -> None:
    """Send small packets at once (TCP_NODELAY), as the broker here does.

    paho leaves Nagle's algorithm on: an answer written while the PUBACK before it is
    not yet acknowledged waits for the peer's delayed ACK (40 ms on Linux), which
    would be measured instead of the round trip.
    """
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Requester:
    """One MQTT client of the given protocol; sends a request and waits for its answer."""

    def __init__(self, broker: Mosquitto, protocol: str) -> None:
        self.v5 = protocol == "5"
        version: MQTTProtocolVersion = mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[float]]] = {}
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-requester-{protocol}", protocol=version
        )
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect(broker.host, broker.port, keepalive=30)
        no_delay(self._client)
        self._client.loop_start()
        topics = (
            [(REPLIES, 1)]
            if self.v5
            else [(f"{GATEWAY_BASE}/+/result", 1), (f"{ECHO_BASE}/+/result", 1)]
        )
        self._client.subscribe(topics)
        if not self._subscribed.wait(15):
            raise BenchError(f"MQTT {protocol} requester: no SUBACK")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        arrived = time.perf_counter()
        try:
            request_id = json.loads(msg.payload).get("id")
        except (ValueError, AttributeError):
            return
        if self.v5 and getattr(msg.properties, "CorrelationData", None) != str(request_id).encode():
            return  # an answer without our correlation data is not an answer to us
        with self._lock:
            waiting = self._waiting.pop(str(request_id), None)
        if waiting is not None:
            waiting[1].append(arrived)
            waiting[0].set()

    def round_trip(self, base: str, command: str, request_id: str) -> float | None:
        """Seconds from just before the publish to the answer; None if none came."""
        done = threading.Event()
        arrival: list[float] = []
        with self._lock:
            self._waiting[request_id] = (done, arrival)
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = REPLIES
            properties.CorrelationData = request_id.encode()
        body = json.dumps({"id": request_id}).encode()
        sent = time.perf_counter()
        self._client.publish(f"{base}/{command}", body, qos=1, properties=properties)
        if not done.wait(ANSWER_TIMEOUT):
            with self._lock:
                self._waiting.pop(request_id, None)
            return None
        return arrival[0] - sent

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextmanager
def requesters(broker: Mosquitto) -> Iterator[dict[str, Requester]]:
    made: dict[str, Requester] = {}
    try:
        for protocol in ("5", "3.1.1"):
            made[protocol] = Requester(broker, protocol)
        yield made
    finally:
        for r in made.values():
            r.stop()


def measure_round_trips(
    clients: dict[str, Requester], run: str, per_kind: int
) -> dict[str, dict[str, Any]]:
    """``per_kind`` requests of every kind, interleaved so that all see the same moments."""
    times: dict[Kind, list[float]] = {k: [] for k in KINDS}
    lost: dict[Kind, int] = dict.fromkeys(KINDS, 0)
    for i, kind in itertools.product(range(per_kind), KINDS):
        request_id = f"{run}-{kind.target}-{kind.protocol}-{kind.command}-{i}"
        rtt = clients[kind.protocol].round_trip(kind.base, kind.command, request_id)
        if rtt is None:
            lost[kind] += 1
        else:
            times[kind].append(rtt)
        time.sleep(GAP)
    return {k.label: {**latency_summary(times[k]), "lost": lost[k]} for k in KINDS}


# ---------------------------------------------------------------- the parts


@dataclass
class CommandsGatewayConfig(GatewayConfig):
    """The benchmarks' gateway configuration with ``ping`` and ``status`` allowed."""

    commands: dict[str, object] = field(
        # Well above the requester's pace: the rate limit is not what is measured.
        default_factory=lambda: {"allow": ["ping", "status"], "max_per_second": 1000}
    )

    def write(self) -> Path:
        path = super().write()
        config = tomllib.loads(path.read_text(encoding="utf-8"))
        config["commands"] = self.commands
        path.write_text(tomli_w.dumps(config), encoding="utf-8")
        return path


def echo(work: Path, broker: Mosquitto) -> Child:
    child = Child("echo", python_module("benchmarks.commands", "--port", str(broker.port)), work)
    child.wait_event("subscribed", 15)
    return child


def subscribed(gw: Gateway) -> None:
    wait_for(lambda: bool(gw.status()["commands"]["subscribed"]), 30, "the gateway's commands")


@contextmanager
def running(work: Path, devices: list[tuple[str, Path]]) -> Iterator[tuple[Mosquitto, Gateway]]:
    with private_broker(work, BROKER_CONFIG) as broker, echo(work, broker):
        config = CommandsGatewayConfig(work, devices, broker.url, gateway_id=GATEWAY_ID)
        with Gateway(config) as gw:
            gw.wait_healthy()
            subscribed(gw)
            yield broker, gw


def measure_idle(per_kind: int) -> dict[str, Any]:
    work = scratch_dir("commands-idle")
    # One silent device, as a real gateway has, so its reader runs too.
    link = PtyLink(work / "tty-idle")
    try:
        with running(work, [("idle-1", link.path)]) as (broker, _gw), requesters(broker) as clients:
            measure_round_trips(clients, "idle-warm", 3)
            return {"round_trips": measure_round_trips(clients, "idle", per_kind)}
    finally:
        link.close()
        shutil.rmtree(work, ignore_errors=True)


def measure_loaded(plan: Plan, per_kind: int) -> dict[str, Any]:
    work = scratch_dir("commands-loaded")
    try:
        with (
            counters(plan.devices, work, SUSTAINED_OFFER / plan.devices) as (devices, _sims),
            running(work, devices) as (broker, gw),
            requesters(broker) as clients,
        ):
            wait_for(lambda: gw.metrics().get(PUBLISHED, 0) > 0, 30, "readings to flow")
            time.sleep(plan.warmup)
            m0, th0, t0 = gw.metrics(), thread_cpu(gw.pid), time.monotonic()
            round_trips = measure_round_trips(clients, "loaded", per_kind)
            m1, th1, t1 = gw.metrics(), thread_cpu(gw.pid), time.monotonic()
            status = gw.status()
        seconds = t1 - t0
        return {
            "round_trips": round_trips,
            "offered_lines_per_s": SUSTAINED_OFFER,
            "devices": plan.devices,
            "window_s": round(seconds, 2),
            "published_per_s": (m1.get(PUBLISHED, 0) - m0.get(PUBLISHED, 0)) / seconds,
            "committed_per_s": (
                m1.get("edge_gateway_store_committed_readings_total", 0)
                - m0.get("edge_gateway_store_committed_readings_total", 0)
            )
            / seconds,
            "breakdown": {
                "threads_cpu_percent": thread_percent(gw.pid, th0, th1, seconds),
                **store_and_uplink_rates(m0, m1, seconds),
            },
            "store_at_end": status["store"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- the figures


def run_commands(plan: Plan) -> BenchResult:
    per_kind = REQUESTS[plan.name]
    idle = measure_idle(per_kind)
    loaded = measure_loaded(plan, per_kind)
    bench = "commands"
    figures: list[Figure] = []
    for run, data, target in (("idle", idle, TARGET_IDLE_MS), ("loaded", loaded, TARGET_LOADED_MS)):
        rt = data["round_trips"]
        for kind in (k for k in KINDS if k.target == "gateway"):
            base = rt[dataclasses.replace(kind, target="echo", command="ping").label]
            mine = rt[kind.label]
            name = f"{kind.command} MQTT {kind.protocol}, {run}"
            figures += [
                Figure(bench, f"{name}, p50", "ms", mine["p50_ms"], None, None, base["p50_ms"]),
                Figure(bench, f"{name}, p99", "ms", mine["p99_ms"], target, "max", base["p99_ms"]),
            ]
        lost = sum(v["lost"] for k, v in rt.items() if k.startswith("gateway"))
        figures.append(Figure(bench, f"answers lost, {run}", "requests", lost, 0, "max"))
    figures.append(
        Figure(
            bench,
            "readings through the gateway while loaded",
            "readings/s",
            loaded["published_per_s"],
            LOAD_TARGET,
            "min",
            note="acknowledged by the broker, from the gateway's /metrics, over the window",
        )
    )
    b = loaded["breakdown"]
    threads = ", ".join(f"{k} {v:.0f}%" for k, v in b["threads_cpu_percent"].items())
    notes = [
        f"loaded: {loaded['published_per_s']:,.0f} readings/s published, "
        f"{loaded['committed_per_s']:,.0f}/s committed ({SUSTAINED_OFFER:,.0f} lines/s offered "
        f"by {loaded['devices']} device(s)); gateway CPU by thread {threads}"
    ]
    return BenchResult(bench, figures, {"idle": idle, "loaded": loaded}, notes=notes)


# ---------------------------------------------------------------- the echo baseline


def echo_main(port: int) -> int:
    """Answer every request on ``echo/bench/cmd/+`` as the gateway would, with nothing
    behind the answer: the broker's own round trip."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-echo", protocol=mqtt.MQTTv5)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        command = msg.topic.removeprefix(ECHO_BASE + "/")
        try:
            request_id = json.loads(msg.payload).get("id")
        except (ValueError, AttributeError):
            return
        body = json.dumps({"id": request_id, "ok": True, "result": {"gateway": "echo"}})
        response_topic = getattr(msg.properties, "ResponseTopic", None)
        properties = None
        if response_topic is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = getattr(msg.properties, "CorrelationData", b"")
        topic = response_topic or f"{ECHO_BASE}/{command}/result"
        client.publish(topic, body, qos=1, properties=properties)

    client.on_message = on_message
    client.on_subscribe = lambda *_: print(json.dumps({"event": "subscribed"}), flush=True)
    client.connect("127.0.0.1", port, keepalive=30)
    no_delay(client)
    client.subscribe(f"{ECHO_BASE}/+", qos=1)
    client.loop_forever()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.commands",
        description="the echo baseline (the benchmark runs with: python -m benchmarks commands)",
    )
    parser.add_argument("--port", type=int, required=True, help="the broker's port")
    return echo_main(parser.parse_args().port)


if __name__ == "__main__":
    sys.exit(main())
