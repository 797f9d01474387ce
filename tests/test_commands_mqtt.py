"""Commands against the real gateway process and a real mosquitto, with MQTT 5 and 3.1.1
clients, and over the local API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import paho.mqtt.client as mqtt
import pytest

from gateway.commands.signing import sign
from tests.support.commands import BASE, REPLIES, CommandClient, subscribed
from tests.support.common import wait_until
from tests.support.gateway_proc import TOKEN, DeviceSpec, GatewayProcess
from tests.support.mosquitto import Mosquitto


def configure(gw: GatewayProcess, broker: Mosquitto, tmp_path: Path) -> None:
    gw.mqtt_url = broker.url
    # A device whose port is absent: it waits, and can be disabled and enabled.
    gw.devices = [DeviceSpec("probe", tmp_path / "no-such-port")]
    gw.more_config = {
        "commands": {
            "allow": ["ping", "status", "device.enable", "device.disable", "device.write"],
            "max_per_second": 1000,
        }
    }


async def metrics(gw: GatewayProcess) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{gw.base_url}/metrics") as resp:
        return await resp.text()


@pytest.mark.timeout(180)
async def test_commands_over_mqtt_5_and_3_1_1(
    gateway_process: GatewayProcess, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    gw = gateway_process
    configure(gw, mosquitto, tmp_path)
    gw.start()
    await gw.wait_healthy()
    await subscribed(gw)
    v5 = CommandClient(mosquitto, mqtt.MQTTv5, "cloud-v5")
    v311 = CommandClient(mosquitto, mqtt.MQTTv311, "cloud-v311")
    try:
        # MQTT 5: the answer goes to the response topic with the correlation data.
        v5.send("ping", {"id": "p-5"}, correlation=b"corr-\x00-1")
        await wait_until(lambda: bool(v5.answers_to("p-5")), message="MQTT 5 answer")
        topic, body, correlation = v5.answers_to("p-5")[0]
        assert topic == REPLIES
        assert correlation == b"corr-\x00-1"
        assert body["ok"] is True
        assert body["result"]["gateway"] == "gw-test"
        assert isinstance(body["result"]["last_seq"], int)

        # MQTT 3.1.1: the fixed result topic.
        answer = await v311.ask("ping", {"id": "p-311"}, "p-311")
        assert answer["ok"] is True
        assert v311.answers_to("p-311")[0][0] == f"{BASE}/ping/result"

        # The same id again: not run again, the stored answer sent again.
        again = await v311.ask("ping", {"id": "p-311"}, "p-311", count=2)
        assert again == answer

        refused = {
            "expired": await v311.ask("ping", {"id": "old", "expires": 1}, "old"),
            "not_allowed": await v311.ask("reload", {"id": "rl"}, "rl"),
            "unknown_command": await v311.ask("self_destruct", {"id": "sd"}, "sd"),
            "bad_args": await v311.ask("device.disable", {"id": "ba", "args": {}}, "ba"),
            "bad_json": await v311.ask("ping", b"{oops", None),
        }
        # Above max_bytes: refused unread. Above the packet size the gateway announced
        # to the broker: dropped by the broker, and the gateway stays connected.
        v311.send("ping", b"x" * (2 * 1024 * 1024))
        padded = {"id": "big", "args": {"pad": "x" * 5000}}
        # Unread, so its id is not known: the second answer with a null id.
        refused["too_large"] = await v311.ask("ping", padded, None, count=2)
        for reason, body in refused.items():
            assert body["ok"] is False, reason
            assert body["error"], reason
        assert "expired" in refused["expired"]["error"]
        assert "not allowed" in refused["not_allowed"]["error"]

        # A device without a write method refuses, the gateway keeps answering.
        cannot = await v311.ask(
            "device.write",
            {"id": "w", "args": {"device": "probe", "sensor": "x", "value": 1}},
            "w",
        )
        assert cannot["ok"] is False

        # device.disable, then enable, seen in status.
        off = await v311.ask("device.disable", {"id": "d1", "args": {"device": "probe"}}, "d1")
        assert off["result"] == {"device": "probe", "enabled": False, "changed": True}
        assert "probe" not in (await gw.status())["devices"]
        on = await v311.ask("device.enable", {"id": "e1", "args": {"device": "probe"}}, "e1")
        assert on["result"]["changed"] is True
        assert "probe" in (await gw.status())["devices"]

        status = (await gw.status())["commands"]
        assert status["duplicates"] == 1
        assert status["refused"] == {
            "bad_args": 2,
            "bad_json": 1,
            "expired": 1,
            "not_allowed": 1,
            "too_large": 1,
            "unknown_command": 1,
        }
        assert status["recent"][-1]["command"] == "device.enable"
        text = await metrics(gw)
        assert 'edge_gateway_commands_total{command="ping",outcome="ok"} 2' in text
        assert 'edge_gateway_commands_refused_total{reason="bad_json"} 1' in text
        assert "edge_gateway_commands_duplicates_total 1" in text

        # Ids are remembered across a restart: the answer is sent again, nothing runs.
        assert gw.terminate() == 0
        gw.start()
        await gw.wait_healthy()
        await subscribed(gw)
        after = await v311.ask("device.disable", {"id": "d1", "args": {"device": "probe"}}, "d1", 2)
        assert after == off
        assert "probe" in (await gw.status())["devices"]
        assert (await gw.status())["commands"]["duplicates"] == 1
    finally:
        v5.stop()
        v311.stop()
    assert gw.terminate() == 0
    log = gw.log_text()
    assert 'command "ping" id="p-311" via mqtt: ok' in log
    assert "Traceback" not in log


async def test_commands_over_the_local_api(
    gateway_process: GatewayProcess, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    gw = gateway_process
    configure(gw, mosquitto, tmp_path)
    gw.more_config["commands"] = {"allow": ["ping", "status", "log_level", "reload"]}
    gw.start()
    await gw.wait_healthy()
    url = f"{gw.base_url}/api/v1/commands"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/ping", json={"id": "l-1"}) as resp:
            assert resp.status == 401
        async with session.post(f"{url}/ping", json={"id": "l-1"}, headers=headers) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["ok"] is True
            assert body["result"]["gateway"] == "gw-test"
        async with session.post(f"{url}/status", json={"id": "l-2"}, headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.json())["result"]["devices"]["probe"]["state"]
        async with session.post(f"{url}/device.read", json={"id": "l-3"}, headers=headers) as r:
            assert r.status == 403
            assert "not allowed" in (await r.json())["error"]
        async with session.post(f"{url}/ping", data=b"{", headers=headers) as resp:
            assert resp.status == 400
        level = {"id": "l-4", "args": {"level": "debug"}}
        async with session.post(f"{url}/log_level", json=level, headers=headers) as resp:
            assert (await resp.json())["result"] == {"level": "DEBUG", "previous": "INFO"}
        # reload answers once the new file is in force: here, one without reload allowed.
        gw.more_config["commands"] = {"allow": ["ping"]}
        gw.write_config()
        async with session.post(f"{url}/reload", json={"id": "l-5"}, headers=headers) as resp:
            assert (await resp.json()) == {"id": "l-5", "ok": True, "result": {"reloaded": True}}
        async with session.post(f"{url}/reload", json={"id": "l-6"}, headers=headers) as resp:
            assert resp.status == 403
    assert (await gw.status())["commands"]["refused"] == {"bad_json": 1, "not_allowed": 2}
    assert gw.terminate() == 0


async def test_a_gateway_on_mqtt_3_1_1_answers_on_the_result_topic(
    gateway_process: GatewayProcess, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    gw = gateway_process
    configure(gw, mosquitto, tmp_path)
    gw.more_config["uplink"] = {
        "mqtt": {"url": mosquitto.url, "topic_prefix": "edge", "protocol": "3.1.1"}
    }
    gw.start()
    await gw.wait_healthy()
    await subscribed(gw)
    client = CommandClient(mosquitto, mqtt.MQTTv5, "cloud-v5")
    try:
        # Its response topic cannot reach a 3.1.1 gateway: the fixed topic is used.
        client.send("ping", {"id": "p"}, correlation=b"c")
        await wait_until(lambda: bool(client.answers_to("p")), message="answer")
        topic, body, _ = client.answers_to("p")[0]
        assert topic == f"{BASE}/ping/result"
        assert body["result"]["gateway"] == "gw-test"
        duplicate = await client.ask("ping", {"id": "p"}, "p", count=2)
        assert duplicate == body
    finally:
        client.stop()
    assert gw.terminate() == 0


async def test_signed_requests_over_the_local_api(
    gateway_process: GatewayProcess, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    gw = gateway_process
    configure(gw, mosquitto, tmp_path)
    key = b"a-gateway-key-of-32-bytes-length"
    key_file = tmp_path / "commands.key"
    key_file.write_bytes(key + b"\n")
    gw.more_config["commands"] = {"allow": ["ping"], "hmac_key_file": str(key_file)}
    gw.start()
    await gw.wait_healthy()
    url = f"{gw.base_url}/api/v1/commands/ping"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    signed = json.dumps({"id": "s-1", "expires": time.time() + 60})
    good = {"signed": signed, "sig": sign(key, "ping", signed)}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"id": "u-1"}, headers=headers) as resp:
            assert resp.status == 400
            assert "signed request" in (await resp.json())["error"]
        async with session.post(url, json=good, headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.json())["result"]["gateway"] == "gw-test"
    assert (await gw.status())["commands"]["refused"] == {"bad_signature": 1}
    assert gw.terminate() == 0
