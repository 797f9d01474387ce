"""``edge-gateway fleet-sim``: real gateways, simulated devices in one process, faults.

The short run here (5 gateways, a few seconds) checks the guarantee a fleet run is
for: through a kill -9 and a blackholed link, a subscriber on the broker gets every
seq of every gateway, at least once and with the same content each time. The run
of 200 gateways is a benchmark (benchmarks/fleet.py, docs/fleet.md).
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.fleet.faults import Fault, FleetUsageError, parse_fault
from gateway.store.admin import queue_stats
from tests.support.cli import ROOT, edge_gateway
from tests.support.common import wait_until_sync
from tests.support.mosquitto import Mosquitto, MqttSubscriber

GATEWAYS = 5


def _readings_by_gateway(subscriber: MqttSubscriber) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in subscriber.telemetry():
        body = message.json()
        found[body["gateway"]].extend(body["readings"])
    return found


@pytest.mark.timeout(240)
def test_every_seq_of_every_gateway_arrives_through_kill9_and_blackhole(
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tmp_path: Path,
) -> None:
    subscriber = subscriber_factory(mosquitto, "edge/+/+/telemetry")
    directory = tmp_path / "fleet"
    stderr = tmp_path / "fleet-sim.err"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "fleet-sim",
                str(GATEWAYS),
                "--broker",
                mosquitto.url,
                "--dir",
                str(directory),
                "--rate",
                "2",
                "--fault",
                "kill9:0.2@0",
                "--fault",
                # Picked among the running gateways: not the one killed, still down.
                "blackhole:0.2@1+60",
                "--restart-after",
                "3",
                "--seed",
                "7",
            ],
            cwd=ROOT,
            stderr=err,
        )
    try:
        # Both faults applied, and every gateway heard from since: then stop it as a
        # user does (SIGTERM). The killed gateway may still be down and the dark link
        # is still dark: the stop lifts both, then waits until every log is sent.
        wait_until_sync(
            lambda: proc.poll() is None and stderr.read_text().count(" of sim-") == 2,
            timeout=150,
            message=f"the faults to be applied:\n{stderr.read_text() if stderr.exists() else ''}",
        )
        killed = re.findall(r"kill9 of (sim-\d+)", stderr.read_text())[0]
        before = len(_readings_by_gateway(subscriber)[killed])
        wait_until_sync(
            lambda: len(_readings_by_gateway(subscriber)[killed]) > before,
            timeout=60,
            message=f"readings from {killed} after its restart",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    report = json.loads((directory / "fleet-report.json").read_text())
    assert report["drained"] is True
    assert report["unsent"] == 0
    assert report["unexpected_exits"] == 0
    kills = [f for f in report["faults"] if f["kind"] == "kill9"]
    assert len(kills) == 1
    assert len(kills[0]["gateways"]) == 1
    members = {m["id"]: m for m in report["members"]}
    assert members[kills[0]["gateways"][0]]["starts"] == 2
    # Memory and CPU were measured for every gateway.
    assert all(m["rss_bytes"] > 0 and m["cpu_percent"] >= 0 for m in members.values())

    # Every seq the stores committed reached the subscriber; duplicates are the same reading.
    received = _readings_by_gateway(subscriber)
    wait_until_sync(
        lambda: all(
            {r["seq"] for r in _readings_by_gateway(subscriber).get(g, [])}
            >= set(range(1, m["last_seq"] + 1))
            for g, m in members.items()
        ),
        timeout=30,
        message="every committed seq at the subscriber",
    )
    received = _readings_by_gateway(subscriber)
    assert set(received) == {f"sim-{i:04d}" for i in range(1, GATEWAYS + 1)}
    for gateway_id, readings in received.items():
        last_seq = members[gateway_id]["last_seq"]
        assert last_seq > 0
        by_seq: dict[int, dict[str, Any]] = {}
        for reading in readings:
            assert by_seq.setdefault(reading["seq"], reading) == reading, gateway_id
        assert set(by_seq) == set(range(1, last_seq + 1)), gateway_id
        # The counter devices count on: each reading's value is a line the device wrote.
        assert all(r["sensor"] == "n" for r in by_seq.values())
    # Every gateway stopped: no data directory is still held.
    for gateway_id in members:
        assert queue_stats(directory / gateway_id / "data").running is False


def test_fault_specs() -> None:
    assert parse_fault("kill9:0.1@30") == Fault("kill9", 0.1, 30.0)
    assert parse_fault("blackhole:0.25@60+30") == Fault("blackhole", 0.25, 60.0, 30.0)
    rng = random.Random(1)
    ids = [f"sim-{i:04d}" for i in range(1, 201)]
    assert len(Fault("kill9", 0.1, 0).pick(ids, rng)) == 20
    # A share rounds up: at least one gateway is hit.
    assert len(Fault("kill9", 0.01, 0).pick(ids[:5], rng)) == 1
    for bad in ("kill9:0@1", "kill9:1.5@1", "blackhole:0.1@5", "kill9:0.1@5+3", "reboot:0.1@1"):
        with pytest.raises(FleetUsageError):
            parse_fault(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "mqtts://broker.example:8883"], "relays plain mqtt://"),
        (["--broker", "mqtt://127.0.0.1:1883", "--fault", "kill9:2@1"], "the fraction must be"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = edge_gateway("fleet-sim", "2", "--dir", tmp_path / "fleet", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
