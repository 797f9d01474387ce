"""Conditions on a running gateway's ``/api/v1/status``, to wait on with a deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.support.gateway_proc import GatewayProcess

# How long a gateway gets to send everything it holds once its link is back.
DRAIN_TIMEOUT = 60.0


def committed_at_least(gw: GatewayProcess, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return int((await gw.status())["store"]["last_seq"]) >= n

    return check


def acked_at_least(
    gw: GatewayProcess, n: int, uplink: str = "mqtt"
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return int((await gw.status())["uplinks"][uplink]["acked_seq"]) >= n

    return check


def uplink_state_is_not(
    gw: GatewayProcess, state: str, uplink: str = "mqtt"
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool((await gw.status())["uplinks"][uplink]["state"] != state)

    return check


def drained(gw: GatewayProcess, uplink: str = "mqtt") -> Callable[[], Awaitable[bool]]:
    """Nothing waits in the log and the uplink has everything acknowledged."""

    async def check() -> bool:
        status = await gw.status()
        return bool(
            status["store"]["depth"] == 0
            and status["uplinks"][uplink]["acked_seq"] == status["store"]["last_seq"]
        )

    return check


async def last_seq(gw: GatewayProcess) -> int:
    return int((await gw.status())["store"]["last_seq"])
