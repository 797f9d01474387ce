"""Commands over the MQTT uplink's connection.

On each connection the uplink hands over, requests are subscribed to on
``{topic_prefix}/{gateway id}/cmd/+`` (QoS 1). Each request runs as its own task
through the router; its answer goes to the MQTT 5 response topic with the
correlation data echoed when the request has them, else to
``{topic_prefix}/{gateway id}/cmd/{command}/result``, at QoS 1. An answer whose
connection was lost meanwhile is not sent: the router remembers it, so the
requester's retry with the same id gets it without running the command again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import UplinkError
from gateway.interfaces import Commands
from gateway.uplinks.paho_async import MqttConnection

log = logging.getLogger(__name__)

# The largest packet an MQTT 5 broker may send the gateway (announced at CONNECT): a
# request larger than this is dropped by the broker, unread; below it, the router's
# `max_bytes` applies.
MAX_INBOUND_PACKET = 1024 * 1024


class MqttCommandChannel:
    def __init__(self, commands: Commands, topic_prefix: str, gateway_id: str) -> None:
        self.commands = commands
        self.base = f"{topic_prefix}/{gateway_id}/cmd"
        self._connection: MqttConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, connection: MqttConnection) -> None:
        """Subscribe on a new connection; answers go out on it while it lasts."""
        self._connection = connection
        self.commands.status.subscribed = False
        connection.subscribe(f"{self.base}/+", self._on_request, self._on_subscribed)

    def detach(self) -> None:
        self._connection = None
        self.commands.status.subscribed = False

    async def close(self) -> None:
        """Cancel requests still running (the uplink stops)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_subscribed(self, granted: bool) -> None:
        self.commands.status.subscribed = granted
        if not granted:
            log.error("the broker refused the subscription to %s/+: no commands", self.base)

    def _on_request(self, message: mqtt.MQTTMessage) -> None:
        command = message.topic.removeprefix(self.base + "/")
        properties = message.properties
        expiry = getattr(properties, "MessageExpiryInterval", None)
        expires_at = None if expiry is None else time.time() + expiry
        task = asyncio.get_running_loop().create_task(
            self._answer(
                command,
                bytes(message.payload),
                expires_at,
                getattr(properties, "ResponseTopic", None),
                getattr(properties, "CorrelationData", None),
            ),
            name=f"command-{command[:64]}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self,
        command: str,
        payload: bytes,
        expires_at: float | None,
        response_topic: str | None,
        correlation: bytes | None,
    ) -> None:
        answer = await self.commands.handle(command, payload, via="mqtt", expires_at=expires_at)
        body = json.dumps(answer.body, ensure_ascii=False, separators=(",", ":")).encode()
        topic = response_topic or f"{self.base}/{command}/result"
        properties = None
        if response_topic is not None and correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        connection = self._connection
        if connection is None:
            log.warning("answer to %s not sent: the connection was lost", json.dumps(command))
            return
        try:
            future = connection.publish(topic, body, properties=properties)
        except (UplinkError, ValueError) as err:
            log.warning("answer to %s not sent to %r: %s", json.dumps(command), topic, err)
            return
        future.add_done_callback(lambda done: _log_refusal(topic, done))


def _log_refusal(topic: str, future: asyncio.Future[ReasonCode]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        log.warning("answer to %r not sent: %s", topic, error)
    elif future.result().is_failure:
        log.warning("broker refused the answer on %r: %s", topic, future.result())
