"""N simulated gateways, their devices and their links, in one process.

The fleet holds every simulated device (pseudo-terminals on this process's event
loop, ``simulators.PtyDevice``) and every member's TCP proxy to the broker, so a
run of 200 gateways costs 200 gateway processes and this one, not 400 more
simulator processes. Members start a few at a time (each is a Python process
importing the whole gateway, the slow part on a small machine).
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import secrets
import time
from collections.abc import Coroutine, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import GatewayError, StoreError
from gateway.fleet import usage
from gateway.fleet.faults import Fault, FleetUsageError
from gateway.fleet.members import Member, MemberConfig
from gateway.store.admin import queue_stats
from simulators import PtyDevice
from simulators.tcp_proxy import TcpProxy

# Descriptors this process holds per member: two per pty, a listening socket and
# two per relayed connection, and some to spare.
FDS_PER_MEMBER = 12
DRAIN_POLL = 0.5


@dataclass(frozen=True, slots=True)
class FleetOptions:
    count: int
    broker_url: str
    directory: Path
    # A clustered broker's other nodes: gateway i connects to node i mod n first and,
    # when that node refuses, to the next (its proxy does, as a load balancer would).
    more_brokers: tuple[str, ...] = ()
    mqtt_protocol: str = "5"  # "3.1.1" for brokers without MQTT 5 (RabbitMQ 3.x)
    rate: float = 1.0  # lines (readings) per second per device
    devices: int = 1  # per gateway
    topic_prefix: str = "edge"
    local_port_base: int | None = None  # member i listens on base + i - 1; None: no server
    starting_at_once: int = 4
    seed: int | None = None
    log_level: str = "WARNING"


@dataclass
class FaultRecord:
    kind: str
    at: float  # seconds after the fleet started
    gateways: list[str]
    lasting: float = 0.0


@dataclass
class Usage:
    """A member's samples over the measuring window."""

    first: usage.Sample | None = None
    last: usage.Sample | None = None
    peak_rss: int = 0
    peak_pss: int = 0
    # Restarted in the window: its CPU then includes a start (imports), not the steady state.
    restarted: bool = False
    pid: int = 0


@dataclass
class Fleet:
    options: FleetOptions
    members: list[Member] = field(default_factory=list)
    devices: list[PtyDevice] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    started_at: float = 0.0  # time.monotonic() once every member has started
    usage: dict[str, Usage] = field(default_factory=dict)
    own: Usage = field(default_factory=Usage)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _rng: random.Random = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        # Which gateways a fault hits: a simulation, not a secret.
        self._rng = random.Random(self.options.seed)  # noqa: S311

    # ---------------------------------------------------------------- set-up

    async def __aenter__(self) -> Fleet:
        options = self.options
        nodes = [broker_address(url) for url in (options.broker_url, *options.more_brokers)]
        _raise_open_files_limit(options.count * (FDS_PER_MEMBER + 2 * options.devices) + 256)
        options.directory.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(1, options.count + 1):
                gateway_id = f"sim-{i:04d}"
                root = options.directory / gateway_id
                links = [root / f"tty-{k}" for k in range(1, options.devices + 1)]
                for link in links:
                    device = PtyDevice("counter", link, rate=options.rate)
                    self.devices.append(await self._stack.enter_async_context(device))
                first = (i - 1) % len(nodes)
                host, port = nodes[first]
                proxy = await TcpProxy(host, port, nodes[first + 1 :] + nodes[:first]).start()
                self._stack.push_async_callback(proxy.close)
                local = None if options.local_port_base is None else options.local_port_base + i - 1
                config = MemberConfig(
                    gateway_id=gateway_id,
                    root=root,
                    links=links,
                    mqtt_url=proxy.url(),
                    topic_prefix=options.topic_prefix,
                    protocol=options.mqtt_protocol,
                    local_port=local,
                    log_level=options.log_level,
                )
                config.write()
                if local is not None:
                    token = root / "token"
                    token.write_text(secrets.token_urlsafe(24) + "\n")
                    token.chmod(0o600)
                self.members.append(Member(config, proxy))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop()
        finally:
            await self._stack.aclose()

    async def start(self) -> None:
        """Start every member, ``starting_at_once`` at a time."""
        gate = asyncio.Semaphore(self.options.starting_at_once)

        async def start_one(member: Member) -> None:
            async with gate:
                await member.start()

        async with asyncio.TaskGroup() as group:
            for member in self.members:
                group.create_task(start_one(member), name=f"start:{member}")
        self.started_at = time.monotonic()
        self.sample_usage_now(reset=True)

    async def stop(self) -> None:
        """Stop every member cleanly (SIGTERM), all at once; then wait for the tasks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(member.stop() for member in self.members))

    # ---------------------------------------------------------------- faults

    async def apply(self, fault: Fault, restart_after: float) -> FaultRecord:
        """Apply ``fault`` to the share of the running members it names."""
        running = [m.gateway_id for m in self.members if m.running]
        hit = fault.pick(running, self._rng) if running else []
        record = FaultRecord(fault.kind, self.elapsed(), hit, fault.lasting)
        self.faults.append(record)
        members = [m for m in self.members if m.gateway_id in hit]
        if fault.kind == "kill9":
            await asyncio.gather(*(m.kill9() for m in members))
            self._spawn(self._restart_later(members, restart_after), "restart")
        else:
            for member in members:
                member.proxy.blackhole()
            self._spawn(self._light_later(members, fault.lasting), "blackhole")
        return record

    async def _restart_later(self, members: list[Member], delay: float) -> None:
        await asyncio.sleep(delay)
        # A member that fails to start again stays down, and the drain at the end
        # says so; the others go on.
        await asyncio.gather(*(m.start() for m in members), return_exceptions=True)

    async def _light_later(self, members: list[Member], delay: float) -> None:
        await asyncio.sleep(delay)
        for member in members:
            member.proxy.resume()
            # The connections that lost bytes are broken; end them at once rather
            # than waiting for the MQTT keepalive to notice.
            member.proxy.reset()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(coro, name=f"fleet-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def heal(self) -> None:
        """End every fault now: restart the killed members, light the dark links."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for member in self.members:
            if member.proxy.blackholed:
                member.proxy.resume()
                member.proxy.reset()
        # Members that crashed on their own stay down: the report counts them.
        killed = [m for m in self.members if not m.running and not m.unexpected_exits]
        await asyncio.gather(*(m.start() for m in killed))

    # ---------------------------------------------------------------- drain

    def pause_devices(self) -> None:
        for device in self.devices:
            device.pause()

    async def drain(self) -> None:
        """Return once every member's log is acknowledged by its uplink.

        Polls each store file (WAL lets a reader in beside the running gateway), so it
        needs no local server; the caller bounds the wait with ``asyncio.timeout``.
        """
        while True:
            if await asyncio.to_thread(self._unsent) == 0:
                return
            await asyncio.sleep(DRAIN_POLL)

    def _unsent(self) -> int:
        return sum(unsent for _, unsent in self.store_figures(self.members))

    def store_figures(self, members: Iterable[Member]) -> list[tuple[int, int]]:
        """(last seq, readings not yet acknowledged) of each member's store (blocking)."""
        figures = []
        for member in members:
            try:
                stats = queue_stats(member.config.data_dir)
            except StoreError:
                figures.append((0, 0))  # not created yet: nothing read, nothing to send
                continue
            unsent = max((c.depth for c in stats.consumers), default=stats.stored)
            figures.append((stats.last_seq, unsent))
        return figures

    # ---------------------------------------------------------------- usage

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    def sample_usage_now(self, *, reset: bool = False) -> None:
        """Take a sample of every member and of this process (blocking: ~1 ms each)."""
        for member in self.members:
            pid = member.pid
            if pid is None:
                continue
            got = usage.sample(pid)
            if got is None:
                continue
            seen = self.usage.setdefault(member.gateway_id, Usage())
            _add(seen, pid, got, reset)
        own = usage.sample(os.getpid())
        if own is not None:
            _add(self.own, os.getpid(), own, reset)


def _add(seen: Usage, pid: int, got: usage.Sample, reset: bool) -> None:
    # A restarted process counts its CPU from zero: its window starts again too.
    restarted = seen.pid not in (0, pid)
    seen.pid = pid
    if reset:
        seen.restarted = False
    if reset or seen.first is None or restarted:
        seen.first = got
        seen.restarted = seen.restarted or restarted
    seen.last = got
    seen.peak_rss = max(seen.peak_rss, got.rss_bytes)
    seen.peak_pss = max(seen.peak_pss, got.pss_bytes or 0)


def broker_address(url: str) -> tuple[str, int]:
    """Host and port of an ``mqtt://`` URL (what the proxies relay to)."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise FleetUsageError(
            f"--broker {url!r}: fleet-sim relays plain mqtt://HOST[:PORT] (its proxies "
            "carry TCP, and a TLS certificate would not name them)"
        )
    try:
        port = parts.port or 1883
    except ValueError:
        raise FleetUsageError(f"--broker {url!r}: bad port") from None
    return parts.hostname, port


def _raise_open_files_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        raise GatewayError(
            f"this many gateways need about {wanted} open files, and the limit is {hard}: "
            "raise it (ulimit -n) or run fewer"
        )
