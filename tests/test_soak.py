"""The soak campaign (tests/soak/): kill -9, power cuts, link faults, broker restarts,
unplug/replug, disk full and a damaged page against the real gateway, watched and reported.

The default suite runs the short campaign (the restarting faults once, the others in
rounds for about a minute; report in soak-report/short/). `make soak` runs the long one
(SOAK_SECONDS, default 30 minutes, at least SOAK_UNPLUGS unplug/replug cycles, default
200; report in soak-report/). Either fails on a lost reading, a reused seq, readings out
of order, a dropped reading, or an RSS or fd trend; the report says which and shows the
run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.soak import campaign
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.tcp_proxy import TcpProxy


async def _campaign(
    plan: campaign.Plan,
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gw: GatewayProcess,
) -> None:
    subscriber = subscriber_factory(mosquitto, "edge/+/+/telemetry")
    proxy = await tcp_proxy_factory(mosquitto.port)
    outcome = await campaign.run(plan, tmp_path, mosquitto, subscriber, proxy, gw)
    failures = outcome.failures()
    report = plan.report_dir() / "summary.md"
    assert not failures, (
        f"soak failed (report: {report}, gateway logs in {gw.root}):\n" + "\n".join(failures)
    )


@pytest.mark.timeout(900)
async def test_short_campaign_loses_nothing_reuses_no_seq_and_leaks_nothing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gateway_process: GatewayProcess,
) -> None:
    await _campaign(
        campaign.SHORT, tmp_path, mosquitto, subscriber_factory, tcp_proxy_factory, gateway_process
    )


@pytest.mark.soak
@pytest.mark.timeout(int(campaign.long_plan().duration) + 1800)
async def test_long_campaign_loses_nothing_reuses_no_seq_and_leaks_nothing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gateway_process: GatewayProcess,
) -> None:
    await _campaign(
        campaign.long_plan(),
        tmp_path,
        mosquitto,
        subscriber_factory,
        tcp_proxy_factory,
        gateway_process,
    )
