"""Both ends of a command: a cloud-side MQTT client, requests, and a runtime stand-in."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.commands.router import CommandError
from gateway.interfaces import GatewayView
from tests.support.common import wait_until, wait_until_sync
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto

BASE = "edge/gw-test/cmd"
REPLIES = "replies/test-client"


class CommandClient:
    """A cloud-side client: sends requests and records every answer it gets."""

    def __init__(self, broker: Mosquitto, protocol: MQTTProtocolVersion, client_id: str) -> None:
        self.v5 = protocol == mqtt.MQTTv5
        self._lock = threading.Lock()
        self.answers: list[tuple[str, dict[str, Any], bytes | None]] = []
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect(broker.host, broker.port, keepalive=10)
        self._client.loop_start()
        topics = [(f"{BASE}/+/result", 1)] + ([(REPLIES, 1)] if self.v5 else [])
        self._client.subscribe(topics)
        wait_until_sync(self._subscribed.is_set, message="client subscribed")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None)
        with self._lock:
            self.answers.append((msg.topic, json.loads(msg.payload), correlation))

    def send(
        self,
        command: str,
        payload: bytes | dict[str, Any],
        *,
        correlation: bytes | None = None,
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        properties = None
        if self.v5 and correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = REPLIES
            properties.CorrelationData = correlation
        self._client.publish(f"{BASE}/{command}", body, qos=1, properties=properties)

    def answers_to(self, request_id: str | None) -> list[tuple[str, dict[str, Any], bytes | None]]:
        with self._lock:
            return [a for a in self.answers if a[1].get("id") == request_id]

    async def ask(
        self, command: str, payload: bytes | dict[str, Any], request_id: str | None, count: int = 1
    ) -> dict[str, Any]:
        """Send and wait for the ``count``-th answer to ``request_id``."""
        self.send(command, payload)
        await wait_until(
            lambda: len(self.answers_to(request_id)) >= count,
            message=f"answer {count} to {request_id}",
        )
        return self.answers_to(request_id)[count - 1][1]

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


async def subscribed(gw: GatewayProcess) -> None:
    async def ready() -> bool:
        return bool((await gw.status())["commands"]["subscribed"])

    await wait_until(ready, timeout=20, message="gateway subscribed to commands")


def request(request_id: str, args: Mapping[str, object] | None = None, **more: object) -> bytes:
    return json.dumps({"id": request_id, "args": dict(args or {}), **more}).encode()


class Runtime:
    """What the built-in commands need of the running gateway, without one."""

    def __init__(self, view: GatewayView) -> None:
        self.view = view
        self.enabled: dict[str, bool] = {}

    def status_body(self) -> dict[str, object]:
        return {"gateway": self.view.gateway_id}

    def configured_devices(self) -> set[str]:
        return set(self.view.devices)

    async def set_device_enabled(self, device: str, enabled: bool) -> bool:
        changed = self.enabled.get(device, True) != enabled
        self.enabled[device] = enabled
        return changed

    async def reload(self) -> None:
        raise CommandError("no file")
