"""Several uplinks: the [[uplinks]] tables, priorities, and the store's consumers
(start point, best effort, release) that the uplinks' cursors rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import summary
from gateway.reading import StoredReading
from gateway.settings import MqttSettings, UplinkEntry
from gateway.store import Store
from gateway.uplinks.route import PriorityRules, Selection
from tests.support.common import wait_until
from tests.support.config import parse, problems
from tests.support.store import opened, sample

DEVICE = '[[devices]]\nid = "d1"\ndriver = "serial_line"\nport = "/dev/ttyUSB0"\n'
LEGACY = '[uplink.mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'


def uplink(name: str, **keys: object) -> str:
    lines = ["[[uplinks]]", f'name = "{name}"', 'url = "mqtt://127.0.0.1:1884"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def test_uplink_tables_and_the_legacy_section_make_one_list(tmp_path: Path) -> None:
    text = LEGACY + uplink("site", topic_prefix="site", devices=["thermo-*", "door"])
    text += uplink("cloud", best_effort=True, start="now", batch_max=100)
    settings = parse(tmp_path, text)
    names = [u.name for u in settings.all_uplinks()]
    assert names == ["mqtt", "site", "cloud"]
    mqtt, site, cloud = settings.all_uplinks()
    assert mqtt == UplinkEntry("mqtt", MqttSettings(url="mqtt://127.0.0.1:1883"))
    assert site.devices == ("thermo-*", "door")
    assert isinstance(site.transport, MqttSettings)
    assert site.transport.topic_prefix == "site"
    assert (site.best_effort, site.start) == (False, "oldest")
    assert (cloud.best_effort, cloud.start, cloud.devices) == (True, "now", ("*",))
    assert isinstance(cloud.transport, MqttSettings)
    assert cloud.transport.batch_max == 100
    # check-config's one line names each of them.
    assert "uplinks: mqtt (mqtt) mqtt://127.0.0.1:1883, site (mqtt) mqtt://127.0.0.1:1884, " in (
        summary(settings)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LEGACY + uplink("mqtt"), 'uplinks[0].name: "mqtt" is already the name of [uplink.mqtt]'),
        (uplink("a") + uplink("a"), 'uplinks[1].name: "a" is already the name of uplinks[0]'),
        (uplink("a b"), "uplinks[0].name: must be 1 to 64 letters"),
        ('[[uplinks]]\nurl = "mqtt://h"\n', "uplinks[0].name: required"),
        (
            uplink("a", type="websocket"),
            "uplinks[0].url: unsupported scheme in 'mqtt://127.0.0.1:1884': use ws or wss",
        ),
        (uplink("a", type="http"), 'uplinks[0].type: must be one of "mqtt", "websocket"'),
        (uplink("a", devices=["th/*"]), 'uplinks[0].devices: "th/*" must be at most 128'),
        (uplink("a", devices=[]), "uplinks[0].devices: must name at least one glob"),
        (uplink("a", start="newest"), 'uplinks[0].start: must be one of "oldest", "now"'),
        (uplink("a", best_effort="yes"), "uplinks[0].best_effort: must be true or false"),
        (uplink("a", batch_maxx=3), 'uplinks[0].batch_maxx: unknown key (did you mean "batch_max"'),
        (uplink("a", max_inflight=0), "uplinks[0].max_inflight: must be from 1 to 65535"),
        ('[uplinks]\nname = "a"\n', "uplinks: must be an array of tables ([[uplinks]] sections)"),
    ],
)
def test_each_bad_uplink_key_is_named_by_its_path(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, DEVICE + text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_priority_of_devices_and_sensors(tmp_path: Path) -> None:
    text = DEVICE + (
        '[[devices]]\nid = "door"\ndriver = "serial_line"\nport = "/dev/x"\npriority = "high"\n'
        'sensor_priority = { battery = "normal" }\n'
        '[[devices]]\nid = "plc"\ndriver = "serial_line"\nport = "/dev/y"\n'
        'sensor_priority = { trip = "high" }\n'
    )
    rules = PriorityRules.of(parse(tmp_path, text).devices)
    selection = Selection(("*",), rules)

    def high(device: str, sensor: str) -> bool:
        payload = json.dumps({"seq": 1, "device": device, "sensor": sensor, "value": 1})
        return selection.high(StoredReading(1, device, payload.encode()))

    assert high("door", "open")
    assert not high("door", "battery")
    assert high("plc", "trip")
    assert not high("plc", "load")
    assert not high("d1", "trip")
    assert selection.priority_devices() == ("door", "plc")
    assert Selection(("d*",), rules).priority_devices() == ("door",)
    assert Selection(("d1",), rules).priority_devices() == ()
    found = problems(tmp_path, DEVICE.replace("\n", '\nsensor_priority = { t = "urgent" }\n', 1))
    assert found == ['devices[0].sensor_priority: t: must be "normal" or "high" (got "urgent")']


async def put(store: Store, count: int, device: str = "thermo-1") -> int:
    store.put_samples([sample(i, device) for i in range(count)])
    return await store.flush()


async def test_a_new_cursor_starts_at_the_oldest_reading_or_now(tmp_path: Path) -> None:
    async with opened(tmp_path, durability="normal") as store:
        last = await put(store, 10)
        assert await store.register_consumer("old") == 0
        assert await store.register_consumer("new", start_now=True) == last
        assert await store.register_consumer("lane", start_at=4) == 4
        # An existing cursor keeps its place, whatever the start asked for.
        await store.ack("old", 3)
        assert await store.register_consumer("old", start_now=True) == 3
        assert await store.consumers() == {"old": 3, "new": 10, "lane": 4}


async def test_a_best_effort_cursor_does_not_hold_retention(tmp_path: Path) -> None:
    # Also in the grace after a start, when every persisted cursor holds.
    async with opened(tmp_path, durability="normal", history=0.0) as store:
        await store.register_consumer("main")
        await store.register_consumer("spare", best_effort=True)
        last = await put(store, 50)
        assert store.stats().depth == 50
        await store.ack("main", last)
        # Retention passes the best-effort cursor (still at 0) at the next upkeep.
        await _wait_oldest(store, None)
        assert store.stats().depth == 0
        assert store.stats().dropped == 0
        assert (await store.consumers())["spare"] == 0


async def test_a_released_cursor_holds_nothing_and_is_gone(tmp_path: Path) -> None:
    async with opened(tmp_path, durability="normal", history=0.0, startup_grace=0.0) as store:
        await store.register_consumer("main")
        await store.register_consumer("removed")
        last = await put(store, 20)
        await store.ack("main", last)
        await store.ack("removed", 5)
        assert await store.release_consumer("removed") == 5
        assert "removed" not in await store.consumers()
        await _wait_oldest(store, None)
        assert store.stats().depth == 0
        # Registered again, it starts as a new cursor does.
        assert await store.register_consumer("removed", start_now=True) == last


async def _wait_oldest(store: Store, expected: int | None) -> None:
    async def reached() -> bool:
        return await store.oldest_seq() == expected

    await wait_until(reached, message=f"oldest seq {expected}")
