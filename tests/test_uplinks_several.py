"""Several uplinks in a running gateway, each on its own private mosquitto: one down
for a while as the other keeps delivering, then catching up with no gap while
retention waits for it; a best-effort one that does not hold the log; `resend`."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w

from gateway.app import Gateway
from gateway.cloud.ingest_server import IngestSettings
from gateway.config import load_config
from gateway.reading import Sample
from gateway.store import Store
from tests.support.commands import CommandClient
from tests.support.common import free_port, wait_until
from tests.support.ingest import INGEST_TOKEN, served, ws_url
from tests.support.landing import landed_bodies
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.mqtt_uplink import GATEWAY, delivered
from tests.support.uplinks import FAST, gateway_running, store_of, uplink


async def oldest(store: Store) -> int | None:
    return await store.oldest_seq()


def seqs_of(subscriber: MqttSubscriber) -> set[int]:
    return set(delivered(subscriber))


def reached(subscriber: MqttSubscriber, seq: int) -> Callable[[], bool]:
    return lambda: max(seqs_of(subscriber), default=0) >= seq


def connected(gateway: Gateway, name: str) -> Callable[[], bool]:
    return lambda: gateway.uplinks[name].status.state == "connected"


async def outage(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
    seconds: float,
) -> None:
    cloud_broker, site_broker = mosquitto_factory(), mosquitto_factory()
    cloud, site = subscriber_factory(cloud_broker), subscriber_factory(site_broker)
    uplinks = [
        uplink("cloud", cloud_broker),
        # The site broker carries the thermometers only: the door's readings pass it by.
        uplink("site", site_broker, devices=["thermo-*"]),
    ]
    async with gateway_running(tmp_path, uplinks) as gateway:
        store = store_of(gateway)
        stop_producing = asyncio.Event()

        async def produce() -> None:
            i = 0
            while not stop_producing.is_set():
                now = time.time()
                store.put_samples([Sample(d, "t", i, now) for d in ("thermo-1", "door")])
                i += 1
                await asyncio.sleep(0.02)

        producer = asyncio.create_task(produce())
        try:
            await wait_until(connected(gateway, "site"), message="site connected")
            await wait_until(lambda: len(seqs_of(site)) > 20, message="site delivering")
            site_broker.stop()
            await wait_until(lambda: not connected(gateway, "site")(), message="site down")
            held = gateway.uplinks["site"].status.acked_seq
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                # The cloud keeps receiving everything while the site is down...
                await wait_until(reached(cloud, store.last_seq), message="cloud live")
                await asyncio.sleep(min(1.0, seconds / 10))
            # ... and the log keeps what the site has not had, though the cloud has it all.
            first = await oldest(store)
            assert first is not None
            assert first <= held + 1
            assert store.stats().depth > 0
            site_broker.start()
        finally:
            stop_producing.set()
            await producer
        last = await store.flush()
        payloads = {r.seq: r for r in await store.read_after(0, 1_000_000)}
        thermo = {s for s, r in payloads.items() if r.device == "thermo-1"}

        await wait_until(
            lambda: gateway.uplinks["site"].status.acked_seq == last, 60, message="site caught up"
        )
        await wait_until(lambda: gateway.uplinks["cloud"].status.acked_seq == last, message="cloud")
        # No gap: every thermometer reading from the outage's start (those committed
        # before it were still in the log at that point) arrived at the site.
        await wait_until(lambda: {s for s in thermo if s > held} <= seqs_of(site), message="gap")
        assert {r["device"] for r in delivered(site).values()} == {"thermo-1"}
        assert set(range(held + 1, last + 1)) <= seqs_of(cloud)
        # Once both have everything, retention deletes it.
        await wait_until(lambda: store.stats().depth == 0, message="depth 0")

        async def trimmed() -> bool:
            return await oldest(store) is None

        await wait_until(trimmed, message="the log trimmed")
        body = gateway.status_body()
        uplinks_status: Any = body["uplinks"]
        assert {n: u["acked_seq"] for n, u in uplinks_status.items()} == {
            "cloud": last,
            "site": last,
        }
        assert uplinks_status["site"]["lost"] == 0


@pytest.mark.timeout(120)
async def test_one_uplink_down_while_the_other_delivers_then_it_catches_up(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
) -> None:
    await outage(tmp_path, mosquitto_factory, subscriber_factory, 20.0)


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_one_uplink_down_for_a_minute_then_it_catches_up(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
) -> None:
    await outage(tmp_path, mosquitto_factory, subscriber_factory, 60.0)


@pytest.mark.timeout(60)
async def test_a_best_effort_uplink_does_not_hold_the_log_and_counts_its_losses(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
) -> None:
    cloud_broker, spare_broker = mosquitto_factory(), mosquitto_factory()
    spare = subscriber_factory(spare_broker)
    spare_broker.stop()
    uplinks = [uplink("cloud", cloud_broker), uplink("spare", spare_broker, best_effort=True)]
    async with gateway_running(tmp_path, uplinks) as gateway:
        store = store_of(gateway)
        # More than the uplink keeps in memory from the commit listener: the spare has to
        # read them from the log, and finds them gone.
        store.put_samples([Sample("thermo-1", "t", i, time.time()) for i in range(3000)])
        await store.flush()
        await wait_until(lambda: gateway.uplinks["cloud"].status.acked_seq == 3000, message="sent")

        async def trimmed() -> bool:
            return await oldest(store) is None

        # The spare is down and has nothing: the log is trimmed all the same.
        await wait_until(trimmed, message="trimmed past the best-effort uplink")
        assert store.stats().depth == 0
        spare_broker.start()
        store.put_samples([Sample("thermo-1", "t", i, time.time()) for i in range(10)])
        await store.flush()
        await wait_until(lambda: seqs_of(spare) == set(range(3001, 3011)), message="spare live")
        status = gateway.uplinks["spare"].status
        await wait_until(lambda: status.acked_seq == 3010, message="spare acknowledged")
        assert status.lost == 3000


@pytest.mark.timeout(90)
async def test_resend_delivers_a_range_again_to_the_named_uplink(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
) -> None:
    cloud_broker, site_broker = mosquitto_factory(), mosquitto_factory()
    cloud = subscriber_factory(cloud_broker, topic="edge/+/+/telemetry")
    site_broker.stop()
    uplinks = [uplink("cloud", cloud_broker), uplink("site", site_broker)]
    commands = {"commands": {"allow": ["resend"], "max_per_second": 1000}}
    async with gateway_running(tmp_path, uplinks, **commands) as gateway:
        store = store_of(gateway)
        client = CommandClient(cloud_broker, mqtt.MQTTv311, "cloud-operator")
        try:
            router = gateway.commands
            assert router is not None
            await wait_until(lambda: router.status.subscribed, message="subscribed")
            store.put_samples([Sample("thermo-1", "t", i, time.time()) for i in range(100)])
            await store.flush()
            status = gateway.uplinks["cloud"].status
            await wait_until(lambda: status.acked_seq == 100, message="all sent")

            async def resend(request_id: str, **args: Any) -> dict[str, Any]:
                return await client.ask("resend", {"id": request_id, "args": args}, request_id)

            # The site (down) holds the log: the range is still there.
            answer = await resend("r1", uplink="cloud", from_seq=10, to_seq=20)
            assert answer["ok"] is True, answer
            assert answer["result"] == {
                "uplink": "cloud",
                "from_seq": 10,
                "to_seq": 20,
                "readings": 11,
            }

            def twice() -> set[int]:
                copies = Counter(r["seq"] for r in cloud.readings())
                return {s for s, n in copies.items() if n == 2}

            await wait_until(lambda: twice() == set(range(10, 21)), message="sent again")
            assert delivered(cloud).keys() == set(range(1, 101))  # copies identical
            # The cursor did not move back.
            assert status.acked_seq == 100
            assert status.resent == 11

            refusals: dict[str, dict[str, object]] = {
                "no uplink 'nope' is running (running: cloud, site)": {"uplink": "nope"},
                '"to_seq" must not be less than "from_seq"': {"from_seq": 5, "to_seq": 4},
                "at most 100000 seqs per resend": {"from_seq": 1, "to_seq": 200_000},
                '"to_seq" 101 is beyond the last committed seq 100': {"to_seq": 101},
                '"from_seq" must be a seq': {"from_seq": "1"},
            }
            for index, (reason, args) in enumerate(refusals.items()):
                bad = await resend(
                    f"bad-{index}", **{"uplink": "cloud", "from_seq": 1, "to_seq": 2, **args}
                )
                assert bad["ok"] is False
                assert bad["error"].startswith(reason), bad
            not_connected = await resend("down", uplink="site", from_seq=1, to_seq=2)
            assert "site: not connected" in not_connected["error"]

            # Once the site has everything too, retention deletes it: all of it gone.
            site_broker.start()
            await wait_until(
                lambda: gateway.uplinks["site"].status.acked_seq == 100, message="site"
            )

            async def trimmed() -> bool:
                return await oldest(store) is None

            await wait_until(trimmed, message="trimmed")
            gone = await resend("gone", uplink="cloud", from_seq=1, to_seq=5)
            assert gone["error"] == (
                "readings 1 to 5 are no longer in the log (the log holds no reading now)"
            )
            # The site down again holds what comes next; a range half gone says which half.
            site_broker.stop()
            await wait_until(lambda: not connected(gateway, "site")(), message="site down")
            store.put_samples([Sample("thermo-1", "t", i, time.time()) for i in range(10)])
            await store.flush()

            async def kept() -> bool:
                return await oldest(store) == 101

            await wait_until(kept, message="101 the oldest kept")
            half = await resend("half", uplink="cloud", from_seq=95, to_seq=105)
            assert half["error"] == (
                "readings 95 to 100 are no longer in the log; 101 to 105 are: ask for those"
            )
            rest = await resend("rest", uplink="cloud", from_seq=101, to_seq=105)
            assert rest["result"]["readings"] == 5
        finally:
            client.stop()


@pytest.mark.timeout(60)
async def test_cursors_follow_the_configured_uplinks_across_reloads(tmp_path: Path) -> None:
    # Nothing listens there: the uplinks back off, their cursors are what counts.
    nowhere = f"mqtt://127.0.0.1:{free_port()}"
    door = {"id": "door", "driver": "serial_line", "port": str(tmp_path / "no-such-port")}
    config: dict[str, Any] = {
        "gateway": {"id": GATEWAY, "data_dir": str(tmp_path / "data")},
        "devices": [door],
        "uplinks": [
            {"name": "cloud", "url": nowhere, **FAST},
            {"name": "site", "url": nowhere, **FAST},
        ],
    }
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    gateway = Gateway(load_config(path))
    task = asyncio.create_task(gateway.run())

    def cursors(expected: set[str]) -> Callable[[], Awaitable[bool]]:
        async def holds() -> bool:
            return set(await store_of(gateway).consumers()) == expected

        return holds

    try:
        await wait_until(lambda: gateway.store is not None, message="store open")
        await wait_until(cursors({"cloud", "site"}), message="two cursors")
        # The door becomes high priority, the site goes: a priority lane for the cloud,
        # the site's cursor released.
        door["priority"] = "high"
        config["uplinks"] = config["uplinks"][:1]
        path.write_text(tomli_w.dumps(config), encoding="utf-8")
        await gateway.reload()
        await wait_until(cursors({"cloud", "cloud:priority"}), message="site released")
        assert set(gateway.uplinks) == {"cloud"}
        del door["priority"]
        path.write_text(tomli_w.dumps(config), encoding="utf-8")
        await gateway.reload()
        await wait_until(cursors({"cloud"}), message="priority lane released")
    finally:
        gateway.request_stop()
        await task


@pytest.mark.timeout(60)
async def test_an_mqtt_and_a_websocket_uplink_each_deliver_what_they_carry(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
) -> None:
    broker = mosquitto_factory()
    cloud = subscriber_factory(broker)
    ingest = IngestSettings(
        "127.0.0.1", free_port(), f"sqlite://{tmp_path / 'landing.db'}", token=INGEST_TOKEN
    )
    websocket = {
        "name": "ingest",
        "type": "websocket",
        "url": ws_url(ingest.port),
        "token": INGEST_TOKEN,
        "devices": ["thermo-*"],  # the door's readings pass it by
        "reconnect_min": 0.05,
        "reconnect_max": 0.5,
        "ack_interval": 0.05,
        "batch_max": 100,
    }
    async with (
        served(ingest),
        gateway_running(tmp_path, [uplink("cloud", broker), websocket]) as gateway,
    ):
        store = store_of(gateway)
        now = time.time()
        store.put_samples(
            [Sample(d, "t", i, now) for i in range(300) for d in ("thermo-1", "door")]
        )
        last = await store.flush()
        acked = gateway.uplinks["cloud"].status, gateway.uplinks["ingest"].status
        await wait_until(lambda: all(a.acked_seq == last for a in acked), message="both acked")
        await wait_until(reached(cloud, last), message="cloud received")
        # Every uplink has everything it carries: retention deletes it all.
        await wait_until(lambda: store.stats().depth == 0, message="depth 0")
    assert seqs_of(cloud) == set(range(1, last + 1))
    landed = {s: json.loads(b) for s, b in (await landed_bodies(ingest.db_url, GATEWAY)).items()}
    # The thermometer's readings are the odd seqs (each loop put thermo-1, then door).
    assert set(landed) == set(range(1, last + 1, 2))
    assert {r["device"] for r in landed.values()} == {"thermo-1"}
    assert sorted(r["value"] for r in landed.values()) == list(range(300))
