"""The campaign: plans (short for the default suite, long for `make soak`) and the runner.

A campaign runs rounds of fault steps against the real gateway (two counter devices on
ptys, MQTT through a TCP proxy to a real mosquitto, the data directory on a tmpfs of its
own) while a sampler watches it. With power cuts, the data directory is on the
power-cut filesystem (tests/support/powercut.py) whose durable state lives on that
tmpfs: the cut drops what was not fsynced, and filling the tmpfs fills the disk the
gateway's fsyncs write back to. A round is: the restarting faults (kill -9, a power
cut, and a damaged page while damages remain), then link dead, broker restart,
unplug/replug, link reset and disk full. Restarting faults run only in the first rounds
(``restart_until``); after that one gateway process lives to the end, and the RSS and
fd trends are fitted over the whole rounds in the second half of its life. The campaign
ends with the first round that ends after ``duration`` with ``min_unplugs`` done; then
the devices stop, the gateway drains and is stopped with SIGTERM, the database is read,
and the subscriber must have every committed reading (see ``ledger``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from simulators import PtyDevice
from tests.soak import report
from tests.soak.faults import (
    BrokerRestart,
    DamagedPage,
    DiskFull,
    FaultStep,
    KillNine,
    LinkBlackhole,
    LinkReset,
    PowerCut,
    Rig,
    UnplugReplug,
    moved_aside,
    tmpfs,
)
from tests.soak.ledger import Ledger, integrity, judge, read_database
from tests.soak.sampler import Sample, Sampler
from tests.soak.trend import Trend, TrendBound, fit
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.gateway_status import drained
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.powercut import PowerCutRig, fuse_unavailable
from tests.support.tcp_proxy import TcpProxy

REPO_ROOT = Path(__file__).resolve().parents[2]

# Documented in docs/operations.md ("Soak"): change both together.
RSS_BOUND = TrendBound("RSS", "MiB", floor=8.0, per_hour=8.0)
FD_BOUND = TrendBound("fds", "fds", floor=8.0, per_hour=8.0)


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    duration: float  # seconds of faults at least
    restart_until: float  # restarting faults only in rounds that start before this
    min_unplugs: int
    unplugs_per_step: int
    max_damages: int
    damage_every: int  # rounds
    rates: tuple[float, float]  # lines per second of the two devices
    disk_size: str  # the data directory's tmpfs
    power_cuts: bool  # the data directory on the power-cut rig, a cut in each restarting round
    sample_interval: float
    progress: int  # readings acknowledged after each fault
    timeout: float  # deadline of each condition

    def report_dir(self) -> Path:
        base = Path(os.environ.get("SOAK_REPORT_DIR", REPO_ROOT / "soak-report"))
        return base if self.name == "long" else base / self.name


# The default suite's: every fault, the restarting ones once, then steady rounds for
# about a minute in all.
SHORT = Plan(
    name="short",
    duration=45.0,
    restart_until=0.0,
    min_unplugs=6,
    unplugs_per_step=3,
    max_damages=int(os.environ.get("SOAK_DAMAGES", "1")),
    damage_every=1,
    rates=(100.0, 50.0),
    disk_size="64m",
    power_cuts=True,
    sample_interval=0.5,
    progress=50,
    timeout=60.0,
)


def long_plan() -> Plan:
    """`make soak`: SOAK_SECONDS (default 1800) of rounds, at least SOAK_UNPLUGS (200)."""
    duration = float(os.environ.get("SOAK_SECONDS", "1800"))
    rates = (200.0, 100.0)
    # Room for every reading of the run (the log keeps them all), about 300 bytes each.
    disk_mib = max(256, int(sum(rates) * (duration + 600) * 300 / 2**20))
    return Plan(
        name="long",
        duration=duration,
        restart_until=0.4 * duration,
        min_unplugs=int(os.environ.get("SOAK_UNPLUGS", "200")),
        unplugs_per_step=10,
        max_damages=int(os.environ.get("SOAK_DAMAGES", "3")),
        damage_every=4,
        rates=rates,
        disk_size=f"{disk_mib}m",
        power_cuts=True,
        sample_interval=2.0,
        progress=200,
        timeout=120.0,
    )


def round_steps(
    plan: Plan, round_no: int, elapsed: float, damages: int, power_cuts: bool
) -> list[FaultStep]:
    """One round's faults, in order. A fault that replaces the gateway process says so
    and stays out of the steady phase."""
    damage: list[FaultStep] = (
        [DamagedPage()] if damages < plan.max_damages and round_no % plan.damage_every == 0 else []
    )
    cut: list[FaultStep] = [PowerCut()] if power_cuts else []
    steps: list[FaultStep] = [
        KillNine(),
        *cut,
        *damage,
        LinkBlackhole(),
        BrokerRestart(),
        UnplugReplug(plan.unplugs_per_step),
        LinkReset(),
        DiskFull(),
    ]
    if round_no == 0 or elapsed < plan.restart_until:
        return steps
    return [step for step in steps if not step.restarts_gateway]


def trends(samples: Sequence[Sample], round_ends: Sequence[float]) -> list[Trend]:
    """RSS and fds of the last gateway process, over the whole rounds in its second half."""
    last = next((s.pid for s in reversed(samples) if s.pid is not None), None)
    life = [s for s in samples if s.pid == last]
    if not life or not round_ends:
        return []
    middle = (life[0].t + round_ends[-1]) / 2
    start = next((t for t in round_ends if t >= middle), middle)
    if start >= round_ends[-1]:  # no whole round after the middle
        start = middle
    window = [s for s in life if start <= s.t <= round_ends[-1]]
    rss = [(s.t, s.rss / report.MIB) for s in window if s.rss is not None]
    fds = [(s.t, float(s.fds)) for s in window if s.fds is not None]
    return [
        fit(bound, [t for t, _ in points], [v for _, v in points])
        for bound, points in ((RSS_BOUND, rss), (FD_BOUND, fds))
        if len(points) >= 2
    ]


async def run(
    plan: Plan,
    workdir: Path,
    broker: Mosquitto,
    subscriber: MqttSubscriber,
    proxy: TcpProxy,
    gw: GatewayProcess,
) -> report.Outcome:
    """Run the campaign and write its report; the outcome says what failed, if anything."""
    outcome = report.Outcome(
        campaign=plan.name,
        parameters={
            **{k: v for k, v in asdict(plan).items() if k != "name"},
            "gateway logs": gw.root,
        },
        started_utc=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    no_cuts = fuse_unavailable() if plan.power_cuts else "not in this plan"
    if no_cuts:
        # Every other fault still runs; the report says why the cuts did not.
        outcome.parameters["power_cuts"] = f"none: {no_cuts}"
    t0 = time.monotonic()
    sampler = Sampler(gw, t0, plan.sample_interval)
    ledger = Ledger()
    read_back = False
    try:
        async with AsyncExitStack() as stack:
            disk = stack.enter_context(tmpfs(workdir / "disk", plan.disk_size))
            powercut = None
            if not no_cuts:
                powercut = PowerCutRig(disk / "rig")
                powercut.mount()
                stack.callback(powercut.unmount)
                gw.data_path = powercut.mountpoint / "data"
            else:
                gw.data_path = disk / "data"
            devices = {
                "dev-a": await stack.enter_async_context(
                    PtyDevice("counter", workdir / "dev-a", rate=plan.rates[0])
                ),
                "dev-b": await stack.enter_async_context(
                    PtyDevice("counter", workdir / "dev-b", rate=plan.rates[1], garbage_every=50)
                ),
            }
            gw.devices = [DeviceSpec(i, d.link) for i, d in devices.items()]
            gw.mqtt_url = proxy.url()
            # Every reading stays in the log for the whole run: the ledger reads them back.
            gw.store_options = {"history": "3650d", "min_free_bytes": 0}
            rig = Rig(
                gw,
                proxy,
                broker,
                subscriber,
                devices,
                disk,
                ledger,
                plan.progress,
                plan.timeout,
                powercut,
            )
            await stack.enter_async_context(sampler.running())
            await rig.restart_gateway()
            await rig.delivery_resumes("the start")
            try:
                await _faults(plan, rig, t0, outcome)
            finally:
                outcome.campaign_end = time.monotonic() - t0
                outcome.unplugs = rig.unplugs
                outcome.parameters["power cuts done"] = rig.cuts
            for device in devices.values():
                device.pause()
            await rig.wait(drained(gw), "log drained")
            outcome.stop_code = gw.terminate()
            db = gw.data_dir / "readings.db"
            ledger.add(read_database(db, after=max(ledger.committed, default=0)))
            read_back = True
            outcome.integrity = integrity(db)
            outcome.moved_aside = moved_aside(gw.data_dir)
        await _subscriber_has(subscriber, ledger.expected, plan.timeout)
    except BaseException as e:
        outcome.error = f"{type(e).__name__}: {e}"
        raise
    finally:
        outcome.samples = sampler.samples
        outcome.dropped = max((s.dropped or 0 for s in sampler.samples), default=0)
        if outcome.campaign_end is not None:
            outcome.trends = trends(outcome.samples, outcome.round_ends)
        if read_back:
            outcome.verdict = judge(ledger, subscriber.telemetry())
        report.write(outcome, plan.report_dir())
    return outcome


async def _subscriber_has(subscriber: MqttSubscriber, expected: set[int], timeout: float) -> None:
    """Wait (up to ``timeout``) for the broker to hand over what it acknowledged.

    Not a failure by itself: what is still missing then is what the verdict calls lost.
    """
    deadline = time.monotonic() + timeout
    # The subscriber's messages arrive on paho's thread: there is nothing to await.
    while not expected <= subscriber.seqs() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(1.0)


async def _faults(plan: Plan, rig: Rig, t0: float, outcome: report.Outcome) -> None:
    """Whole rounds until the plan is done: every round ends in the same state (devices
    plugged, link up, delivery caught up), which the trend window starts and ends on."""
    round_no = 0
    while True:
        steps = round_steps(
            plan, round_no, time.monotonic() - t0, rig.damages, rig.powercut is not None
        )
        for step in steps:
            start = time.monotonic() - t0
            detail = "FAILED"
            try:
                detail = await step.run(rig)
            except BaseException as e:
                detail = f"FAILED: {type(e).__name__}: {e}"
                raise
            finally:
                end = time.monotonic() - t0
                outcome.events.append(report.FaultEvent(step.name, start, end, detail))
        outcome.round_ends.append(time.monotonic() - t0)
        round_no += 1
        if time.monotonic() - t0 >= plan.duration and rig.unplugs >= plan.min_unplugs:
            return
