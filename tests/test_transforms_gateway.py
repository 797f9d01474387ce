"""Transforms in the real gateway: a device on a pseudo-terminal, `edge-gateway run` as a
process, a mosquitto subscriber receiving fewer, transformed readings."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.store import admin
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.mqtt_uplink import delivered
from tests.support.store import opened
from tests.support.transforms import deadband_reference

LINES = 60


def device_lines() -> tuple[list[bytes], list[int]]:
    """Lines of a boiler in tenths of a degree, and its temperatures."""
    rng = random.Random(7)
    temps = []
    t = 215
    lines = []
    for i in range(LINES):
        t += rng.choice([-3, -1, 0, 1, 2, 4, 7])
        temps.append(t)
        state = " state=ok" if i % 10 == 0 else ""
        lines.append(f"t={t} h={40 + i % 3} p={1000 + i} v1={i % 17}{state}\n".encode())
    return lines, temps


async def test_a_gateway_sends_fewer_transformed_readings(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    gateway_process: GatewayProcess,
) -> None:
    subscriber = subscriber_factory(mosquitto, "edge/+/boiler/telemetry")
    gw = gateway_process
    transforms: list[dict[str, object]] = [
        {"sensor": "t", "scale": 0.1, "rename": "temperature", "unit": "°C", "deadband": 0.5},
        {"sensor": "h", "window": "1s", "aggregate": "count"},
        {"sensor": "p", "min_interval": "1h"},
        # Never closed by time during the test: sent when the gateway stops.
        {"sensor": "v*", "window": "1h", "aggregate": "max"},
    ]
    lines, temps = device_lines()
    async with PtyDevice("counter", tmp_path / "boiler", paused=True) as dev:
        gw.devices = [
            DeviceSpec("boiler", dev.link, keys={"format": "kv", "transforms": transforms})
        ]
        gw.mqtt_url = mosquitto.url
        gw.start()
        await gw.wait_healthy()

        async def port_open() -> bool:
            return bool((await gw.status())["devices"]["boiler"]["state"] == "open")

        # The port is flushed when opened: write only once it is.
        await wait_until(port_open, timeout=20, message="boiler port open")
        dev.inject(b"".join(lines[: LINES // 2]))
        dev.inject(b"".join(lines[LINES // 2 :]))
        dev.inject(b"t=warm\n")

        def by_sensor(sensor: str) -> list[dict[str, Any]]:
            readings = sorted(delivered(subscriber).items())
            return [r for _, r in readings if r["sensor"] == sensor]

        def counted() -> bool:
            return bool(sum(r["value"] for r in by_sensor("h")) == LINES)

        # No further line comes: the timer closes the last window of h.
        await wait_until(counted, timeout=30, message="every h sample counted in a window")
        temperatures = [t * 0.1 + 0 for t in temps]
        expected = [v for _, v in deadband_reference(list(enumerate(temperatures)), lambda _: 0.5)]
        await wait_until(
            lambda: (
                len(by_sensor("temperature")) == len(expected)
                and len(by_sensor("state")) == LINES // 10
            ),
            timeout=30,
            message="temperatures and states",
        )

        async def refused_counted() -> bool:
            return bool((await gw.status())["devices"]["boiler"]["errors"] == 1)

        await wait_until(refused_counted, timeout=20, message="t=warm counted as an error")
        assert gw.terminate() == 0

    readings = list(delivered(subscriber).values())
    assert {r["sensor"] for r in readings} == {"temperature", "h", "p", "state"}
    # Scaled, renamed, with its unit, and only moves of more than the deadband.
    assert [r["value"] for r in by_sensor("temperature")] == expected
    assert all(r["unit"] == "°C" for r in by_sensor("temperature"))
    assert len(expected) < LINES
    # Counted per one-second window, each stamped with its window's end.
    assert len(by_sensor("h")) < LINES
    assert all(r["value"] >= 1 and r["ts"] == math.floor(r["ts"]) for r in by_sensor("h"))
    # At most one pressure an hour: the first.
    assert [r["value"] for r in by_sensor("p")] == [1000]
    # Untouched by any transform.
    assert [r["value"] for r in by_sensor("state")] == ["ok"] * (LINES // 10)
    # Of the 246 samples read, only these were sent.
    assert len(readings) == len(expected) + len(by_sensor("h")) + 1 + LINES // 10
    assert len(readings) < LINES * 2

    # The hour's window of v1, still open at the stop, was stored before the store closed.
    async with opened(gw.data_dir) as store:
        stored = [json.loads(r.payload) for r in await store.read_after(0, 10_000)]
    v1 = [r for r in stored if r["sensor"] == "v1"]
    assert max(r["value"] for r in v1) == 16
    # Stamped with the stop, after the last sample, within its window (or at its end,
    # had the hour ended between the last sample and the stop).
    last_read = max(r["ts"] for r in stored if r["sensor"] == "state")
    assert last_read <= v1[-1]["ts"] <= math.floor(last_read / 3600 + 1) * 3600
    # The line that could not be transformed is a dead letter, as it came.
    letters = admin.dead_letters(gw.data_dir, 10)
    assert [(d.reason, d.raw) for d in letters] == [
        ('transform of "t": needs a number, not a string', b"t=warm")
    ]
