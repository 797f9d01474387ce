"""Soak (`make soak`): the end-to-end fault cycle over and over, then the same check.

Dead routes, RSTs, broker restarts and `kill -9` of the gateway repeat for
SOAK_SECONDS (default 600) while two devices write; afterwards every committed seq
must have arrived, duplicates identical, per-device order kept. Not in the default
suite: it is long by design.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.fixtures.common import wait_until
from tests.fixtures.gateway_proc import GatewayProcess
from tests.fixtures.mosquitto import Mosquitto, MqttSubscriber
from tests.fixtures.tcp_proxy import TcpProxy
from tests.test_end_to_end import (
    DRAIN_TIMEOUT,
    drained,
    fault_cycle,
    last_seq,
    stop_and_check_delivery,
    two_devices_through,
)

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))


@pytest.mark.soak
@pytest.mark.timeout(int(SOAK_SECONDS) + 600)
async def test_nothing_is_lost_over_many_fault_cycles(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gateway_process: GatewayProcess,
) -> None:
    subscriber = subscriber_factory(mosquitto, "edge/+/+/telemetry")
    proxy = await tcp_proxy_factory(mosquitto.port)
    gw = gateway_process
    cycles = 0
    async with two_devices_through(proxy, gw, tmp_path, garbage_every=50):
        deadline = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < deadline:
            await fault_cycle(gw, proxy, mosquitto)
            cycles += 1

    await wait_until(drained(gw), timeout=DRAIN_TIMEOUT, message="log drained")
    assert cycles >= 1
    await stop_and_check_delivery(gw, subscriber, await last_seq(gw))
