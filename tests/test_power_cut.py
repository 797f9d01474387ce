"""The real gateway losing power, over and over, with its data directory on the rig.

Two simulated devices write, the uplink delivers to a real mosquitto (unreachable
in about a third of the runs), a client watches the local stream, and the power is
cut at a random moment (now and then while the gateway stops cleanly): the disk
keeps only what was fsynced (some cuts tear the writes in flight), the gateway is
killed with it, and it starts again on what the disk kept. After each cut and restart:

- the database opens and passes ``PRAGMA integrity_check``;
- no seq carries two different readings, across the cloud, the local stream and the
  log (a seq handed out again after a cut would);
- ``durability = "full"``: every reading anyone saw (the cloud, the stream), and
  every seq of the run up to ``last_seq`` as ``/api/v1/status`` reported it, is still in the log;
- ``durability = "normal"``: what a cut loses is the newest readings only (never one
  older than a reading that survived), within the bound docs/store.md states.

The cuts are drawn from a seed, printed at the start (``POWERCUT_SEED`` replays it).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.store.schema import DB_NAME, WAL_AUTOCHECKPOINT_BYTES
from simulators import PtyDevice
from tests.support.common import free_port, wait_until
from tests.support.gateway_proc import TOKEN, DeviceSpec, GatewayProcess
from tests.support.gateway_status import DRAIN_TIMEOUT, drained, last_seq
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.powercut import PowerCutRig, sync_dir, write_file
from tests.support.tcp_proxy import TcpProxy

DEFAULT_CUTS = 10
SOAK_CUTS = int(os.environ.get("POWERCUT_SOAK_CUTS", "200"))
# How long the load runs between a start and the next cut (seconds, drawn uniformly).
RUN_MIN, RUN_MAX = 0.2, 1.5
BROKER_DOWN_CHANCE = 0.3
TEAR_CHANCE = 0.5
STOPPING_CHANCE = 0.2


def run_seed() -> int:
    seed = int(os.environ.get("POWERCUT_SEED", random.randrange(2**32)))
    print(f"power-cut seed {seed} (POWERCUT_SEED={seed} replays it)")
    return seed


@dataclass
class Ledger:
    """Every reading seen anywhere, by seq: a seq must never carry two readings."""

    readings: dict[int, dict[str, Any]] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)

    def see(self, reading: dict[str, Any], source: str) -> None:
        seq = int(reading["seq"])
        first = self.readings.setdefault(seq, reading)
        self.sources.setdefault(seq, source)
        assert reading == first, (
            f"seq {seq} reused: {first} (from {self.sources[seq]}) and {reading} (from {source})"
        )


@dataclass
class Log:
    integrity: list[str]
    readings: dict[int, dict[str, Any]]
    page_size: int


def read_log(db: Path) -> Log:
    """The database as the disk kept it, read through a connection of our own."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        readings = {
            int(seq): json.loads(payload)
            for seq, payload in conn.execute("SELECT seq, payload FROM readings")
        }
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    return Log(integrity, readings, page_size)


async def watch_stream(gw: GatewayProcess, seen: Callable[[dict[str, Any]], None]) -> None:
    """Every reading the local stream announces (it announces only committed ones)."""
    url = f"{gw.base_url}/api/v1/stream"
    with suppress(aiohttp.ClientError, ConnectionError):
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, params={"token": TOKEN}) as ws,
        ):
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                body = json.loads(message.data)
                if body.get("type") == "readings":
                    for reading in body["readings"]:
                        seen(reading)


async def run_load(gw: GatewayProcess, seconds: float) -> int:
    """Let the load run for ``seconds``; the highest ``last_seq`` the status reported."""
    committed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with suppress(aiohttp.ClientError):
            committed = max(committed, int((await gw.status())["store"]["last_seq"]))
        await asyncio.sleep(0.05)
    return committed


@dataclass
class Campaign:
    """The state carried from cut to cut, and the checks after each one."""

    # One per run, in turn: the gateway restarts after a cut with the next one.
    durabilities: tuple[str, ...]
    rig: PowerCutRig
    gw: GatewayProcess
    subscriber: MqttSubscriber
    ledger: Ledger = field(default_factory=Ledger)
    lost: set[int] = field(default_factory=set)
    torn_pages: int = 0
    lost_names: int = 0
    cuts: int = 0

    @property
    def db(self) -> Path:
        return self.gw.data_dir / DB_NAME

    def see_cloud(self) -> set[int]:
        seqs = set()
        for reading in self.subscriber.readings():
            self.ledger.see(reading, "cloud")
            seqs.add(int(reading["seq"]))
        return seqs

    async def cut_once(self, rng: random.Random, proxy: TcpProxy) -> None:
        if rng.random() < BROKER_DOWN_CHANCE:
            proxy.blackhole()
            proxy.reset()
        else:
            proxy.resume()
        before = set(self.ledger.readings)
        watcher = asyncio.create_task(
            watch_stream(self.gw, lambda reading: self.ledger.see(reading, "stream"))
        )
        committed = await run_load(self.gw, rng.uniform(RUN_MIN, RUN_MAX))
        assert self.gw.proc is not None
        if rng.random() < STOPPING_CHANCE:
            # The power goes while the gateway stops cleanly (commits, checkpoints, settles
            # the seq floor), or just after.
            self.gw.signal(signal.SIGTERM)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
        durability = self.gw.durability
        tear = rng.random() < TEAR_CHANCE
        summary = self.rig.cut([self.gw.proc], tear=tear, seed=rng.randrange(2**32))
        watcher.cancel()
        with suppress(asyncio.CancelledError):
            await watcher
        self.cuts += 1
        self.torn_pages += len(summary["torn"])
        self.lost_names += len(summary["dropped_names"])
        self.see_cloud()
        seen_before = set(self.ledger.readings)
        # A run's seqs lie above every earlier one; a lower seq first seen now is a late
        # copy from the cloud of a reading an earlier cut lost.
        prior = max(before, default=0)
        this_run = {s for s in seen_before - before if s > prior}

        self.rig.mount()
        self.gw.durability = self.durabilities[self.cuts % len(self.durabilities)]
        # A fresh port each start: over hundreds of restarts on a busy machine, another
        # process's outgoing connection sooner or later holds the old one.
        self.gw.local_port = free_port()
        self.gw.start()
        await self.gw.wait_healthy()
        log = read_log(self.db)
        context = f"cut {self.cuts} of a run with {durability} ({summary})"
        assert log.integrity == ["ok"], f"{context}: integrity_check: {log.integrity}"
        for reading in log.readings.values():
            self.ledger.see(reading, f"log after cut {self.cuts}")

        missing = seen_before - log.readings.keys() - self.lost
        if durability == "full":
            # Within one run seqs follow each other without a gap, so last_seq stands for
            # every seq from the run's first one up. A run may start with a gap (after an
            # unclean stop under "normal" the store continues above its seq floor), and
            # the cloud may hand over late copies of readings an earlier "normal" cut
            # lost: those lie below the run's first seq in the log and were judged then.
            run_first = min((s for s in this_run if s in log.readings), default=committed + 1)
            missing -= {s for s in seen_before - before if s < run_first}
            missing |= set(range(run_first, committed + 1)) - log.readings.keys()
            assert not missing, (
                f"{context}: {len(missing)} committed readings lost, e.g. {sorted(missing)[:10]}"
            )
            return
        # "normal": the last commits may go, never one before a reading that stayed.
        newest = max(seen_before, default=0)
        kept = max((s for s in log.readings if s <= newest), default=0)
        older = sorted(s for s in missing if prior < s < kept)
        assert not older, f"{context}: lost {older[:10]} though seq {kept} survived"
        run_first = min(this_run, default=newest + 1)
        lost_count = max(0, newest - max(kept, run_first - 1))
        # Each reading takes at least its payload's bytes in the WAL; at these rates the
        # commit that crossed the mark adds a few readings at most.
        payload = min((len(json.dumps(r)) for r in self.ledger.readings.values()), default=1)
        # The bound of docs/store.md for "normal": the WAL is synced before each
        # checkpoint, which the store has SQLite run once the WAL holds this much.
        bound = WAL_AUTOCHECKPOINT_BYTES // payload
        assert lost_count <= bound, f"{context}: lost {lost_count} readings, bound {bound}"
        self.lost |= missing

    def check_final(self, log: Log) -> None:
        """Once drained: the cloud has every reading of the log, each device's in order."""
        cloud = self.see_cloud()
        for reading in log.readings.values():
            self.ledger.see(reading, "final log")
        undelivered = sorted(log.readings.keys() - cloud)
        assert not undelivered, f"never delivered: {undelivered[:10]}"
        for device in {r["device"] for r in self.ledger.readings.values()}:
            values = [
                self.ledger.readings[s]["value"]
                for s in sorted(self.ledger.readings)
                if self.ledger.readings[s]["device"] == device
            ]
            assert values == sorted(values), f"{device}: readings out of order across cuts"


@asynccontextmanager
async def gateway_on_rig(
    rig: PowerCutRig, gw: GatewayProcess, proxy: TcpProxy, tmp_path: Path, durability: str
) -> AsyncIterator[None]:
    async with (
        PtyDevice("counter", tmp_path / "dev-a", rate=300) as dev_a,
        PtyDevice("counter", tmp_path / "dev-b", rate=150) as dev_b,
    ):
        gw.devices = [DeviceSpec("dev-a", dev_a.link), DeviceSpec("dev-b", dev_b.link)]
        gw.mqtt_url = proxy.url()
        gw.durability = durability
        gw.data_path = rig.mountpoint / "data"
        gw.start()
        await gw.wait_healthy()
        yield


async def power_cut_campaign(
    durabilities: tuple[str, ...],
    cuts: int,
    rig: PowerCutRig,
    gw: GatewayProcess,
    proxy: TcpProxy,
    subscriber: MqttSubscriber,
    tmp_path: Path,
) -> Campaign:
    rng = random.Random(run_seed())
    campaign = Campaign(durabilities, rig, gw, subscriber)
    async with gateway_on_rig(rig, gw, proxy, tmp_path, durabilities[0]):
        for _ in range(cuts):
            await campaign.cut_once(rng, proxy)
    proxy.resume()
    await wait_until(drained(gw), timeout=DRAIN_TIMEOUT, message="log drained")
    final = await last_seq(gw)
    await wait_until(
        lambda: max(subscriber.seqs(), default=0) >= final,
        timeout=DRAIN_TIMEOUT,
        message=f"the cloud has seq {final}",
    )
    assert gw.terminate() == 0
    log = read_log(campaign.db)
    assert log.integrity == ["ok"]
    campaign.check_final(log)
    print(
        f"{campaign.cuts} cuts ({'/'.join(durabilities)}): {campaign.torn_pages} pages torn, "
        f"{campaign.lost_names} names lost, {len(campaign.lost)} readings lost, "
        f"last seq {final}"
    )
    return campaign


CampaignArgs = tuple[PowerCutRig, GatewayProcess, TcpProxy, MqttSubscriber]


@pytest.fixture
async def campaign_parts(
    powercut_rig: PowerCutRig,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    tcp_proxy_factory: Callable[[int], Awaitable[TcpProxy]],
    gateway_process: GatewayProcess,
) -> CampaignArgs:
    subscriber = subscriber_factory(mosquitto, "edge/+/+/telemetry")
    proxy = await tcp_proxy_factory(mosquitto.port)
    return powercut_rig, gateway_process, proxy, subscriber


@pytest.mark.timeout(300)
async def test_full_durability_keeps_every_committed_reading_across_power_cuts(
    campaign_parts: CampaignArgs, tmp_path: Path
) -> None:
    campaign = await power_cut_campaign(("full",), DEFAULT_CUTS, *campaign_parts, tmp_path)
    assert campaign.cuts == DEFAULT_CUTS
    assert not campaign.lost


@pytest.mark.timeout(300)
async def test_normal_durability_loses_only_the_last_commits_and_never_reuses_a_seq(
    campaign_parts: CampaignArgs, tmp_path: Path
) -> None:
    campaign = await power_cut_campaign(("normal",), DEFAULT_CUTS // 2, *campaign_parts, tmp_path)
    assert campaign.cuts == DEFAULT_CUTS // 2


@pytest.mark.timeout(300)
async def test_a_seq_lost_with_normal_is_not_handed_out_again_after_a_start_with_full(
    campaign_parts: CampaignArgs, tmp_path: Path
) -> None:
    """Durability changed between starts: after a cut under "normal" the log may lack
    readings the cloud already has; a start under "full" must still skip their seqs."""
    await power_cut_campaign(("normal", "full"), 4, *campaign_parts, tmp_path)


async def test_a_damaged_database_moved_aside_stays_kept_and_its_seqs_unused_across_cuts(
    powercut_rig: PowerCutRig, gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    """The move aside and the fresh database's first seqs are made durable in the right
    order: whenever the power goes, the damaged file is still there (moved aside, or
    under its old name if nothing was committed since), and the fresh log continues
    above every seq the damaged one may have handed out."""
    rig, gw = powercut_rig, gateway_process
    data = rig.mountpoint / "data"
    data.mkdir()
    damaged = b"this was a database before the SD card wore out. " * 200
    write_file(data / DB_NAME, damaged, sync=True)
    write_file(data / "seq.floor", b"5000\n", sync=True)
    sync_dir(data)
    rng = random.Random(run_seed())
    ledger = Ledger()
    async with PtyDevice("counter", tmp_path / "dev-a", rate=200) as dev:
        gw.devices = [DeviceSpec("dev-a", dev.link)]
        gw.durability = "normal"
        gw.data_path = data
        gw.start()
        await gw.wait_healthy()
        for cut in range(1, 4):
            watcher = asyncio.create_task(
                watch_stream(gw, lambda reading: ledger.see(reading, "stream"))
            )
            await run_load(gw, rng.uniform(0.0, 0.5))
            assert gw.proc is not None
            summary = rig.cut([gw.proc], tear=rng.random() < TEAR_CHANCE, seed=rng.randrange(2**32))
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher
            rig.mount()
            kept = [p.name for p in data.iterdir() if p.read_bytes() == damaged]
            assert kept, f"cut {cut} ({summary}): the damaged database is gone"
            gw.local_port = free_port()
            gw.start()
            await gw.wait_healthy()
            log = read_log(data / DB_NAME)
            assert log.integrity == ["ok"]
            for reading in log.readings.values():
                ledger.see(reading, f"log after cut {cut}")
    assert gw.terminate() == 0
    assert [p for p in data.glob(f"{DB_NAME}.corrupt-*") if p.read_bytes() == damaged]
    assert ledger.readings, "no reading was committed"
    assert min(ledger.readings) > 5000


@pytest.mark.soak
@pytest.mark.timeout(SOAK_CUTS * 20 + 600)
@pytest.mark.parametrize("durability", ["full", "normal"])
async def test_soak_power_cuts(
    campaign_parts: CampaignArgs, tmp_path: Path, durability: str
) -> None:
    campaign = await power_cut_campaign((durability,), SOAK_CUTS, *campaign_parts, tmp_path)
    assert campaign.cuts == SOAK_CUTS
    if durability == "full":
        assert not campaign.lost
