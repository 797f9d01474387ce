"""Home Assistant MQTT discovery on an MQTT uplink (``home_assistant = true``).

On each connection the uplink hands over, a retained config message is published per
device and sensor under ``{discovery_prefix}/{component}/{node}/{object}/config``
(node: the gateway id), so that Home Assistant shows every sensor with its unit and
device class, available while the gateway's retained status says ``online``. Sensors
known from the configuration (Modbus registers, adc channels, a gpio output, ``units``
and transform renames) are announced at connect; others (free-form drivers) the first
time a reading of theirs is delivered.

Writable Modbus registers and gpio outputs become ``number`` or ``switch`` entities.
Their command topic ``{topic_prefix}/{gateway}/ha/{device}/{sensor}/set`` is turned
into a ``device.write`` request through the command router: the allowlist, the write
rules and their bounds, the counters and the journal apply as for any request.

Retained configs under the gateway's node that the configuration no longer names (a
device removed, a register gone) are cleared with an empty retained message on connect.
``docs/mqtt.md`` ("Home Assistant") describes the entities.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from gateway.commands.router import CommandRouter
from gateway.errors import UplinkError
from gateway.interfaces import Commands
from gateway.reading import StoredReading
from gateway.settings import DeviceSettings, MqttSettings
from gateway.uplinks.paho_async import MqttConnection

log = logging.getLogger(__name__)

# Units that say what a sensor measures; "%" only with a name that says humidity.
DEVICE_CLASSES = {
    "°C": "temperature",
    "°F": "temperature",
    "K": "temperature",
    "V": "voltage",
    "A": "current",
    "W": "power",
    "kW": "power",
    "Wh": "energy",
    "kWh": "energy",
}
# Modbus tables whose entries hold on/off.
BOOLEAN_TABLES = frozenset({"coil", "discrete"})
# A free-form device announces at most this many sensors (a noisy line cannot flood
# the broker with configs).
MAX_SENSORS_PER_DEVICE = 256
# The range a number entity offers when no [[commands.writes]] rule bounds it.
UNBOUNDED = 1e9


@dataclass(frozen=True, slots=True)
class Entity:
    """One Home Assistant entity: a sensor of a device, maybe writable."""

    device: str
    sensor: str
    unit: str | None = None
    # "sensor", "number" or "switch".
    component: str = "sensor"
    step: float = 0.001


def configured_entities(device: DeviceSettings) -> tuple[list[Entity], bool]:
    """The entities the configuration names for ``device``, and whether that is all of
    its sensors (a driver with a fixed list) rather than a start (free-form lines)."""
    found: dict[str, Entity] = {}
    for register in getattr(device, "registers", ()):
        component = "sensor"
        if getattr(register, "writable", False):
            component = "switch" if register.table in BOOLEAN_TABLES else "number"
        step = register.scale if str(register.type).startswith(("int", "uint")) else 0.001
        found[register.sensor] = Entity(
            device.id, register.sensor, register.unit or None, component, step
        )
    for channel in getattr(device, "channels", ()):
        found[channel.sensor] = Entity(device.id, channel.sensor, channel.unit or None)
    fixed = bool(found)
    if hasattr(device, "pwm") and hasattr(device, "pin"):
        # gpio_output: one output, on/off or a duty cycle.
        sensor = getattr(device, "sensor", "") or "state"
        pwm = bool(device.pwm)
        found[sensor] = Entity(device.id, sensor, None, "number" if pwm else "switch", 0.01)
        fixed = True
    for sensor, unit in device.units.items():
        if sensor not in found:
            found[sensor] = Entity(device.id, sensor, unit)
        elif found[sensor].unit is None:
            found[sensor] = replace(found[sensor], unit=unit)
    result: dict[str, Entity] = {}
    for entity in found.values():
        renamed = _transformed(device, entity)
        result[renamed.sensor] = renamed
    for transform in device.transforms:
        # A rename names a sensor even of a free-form device.
        if transform.rename is not None and transform.rename not in result:
            result[transform.rename] = Entity(device.id, transform.rename, transform.unit)
    return list(result.values()), fixed


def _transformed(device: DeviceSettings, entity: Entity) -> Entity:
    """``entity`` as its readings leave the first transform that matches it."""
    for transform in device.transforms:
        if fnmatch.fnmatchcase(entity.sensor, transform.sensor):
            name = transform.rename or entity.sensor
            unit = transform.unit or entity.unit
            # A renamed output is written under its configured name: read-only here.
            component = entity.component if name == entity.sensor else "sensor"
            return replace(entity, sensor=name, unit=unit, component=component)
    return entity


def device_class(sensor: str, unit: str | None) -> str | None:
    if unit is None:
        return None
    if unit == "%":
        return "humidity" if "hum" in sensor.lower() or sensor.lower() in ("h", "rh") else None
    return DEVICE_CLASSES.get(unit)


def _slug(text: str) -> str:
    """Home Assistant's node and object ids: letters, digits, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _latest(sensor: str, render: str, keep: str) -> str:
    """A Jinja template that picks ``sensor``'s latest value out of a telemetry message
    (a message carries one device's readings, maybe none of this sensor's); ``keep``:
    what it renders then, which leaves the entity's state as it was."""
    name = json.dumps(sensor)
    return (
        f"{{% set r = value_json.readings | selectattr('sensor', 'eq', {name}) | list %}}"
        f"{{{{ ({render}) if r else {keep} }}}}"
    )


class HomeAssistant:
    """Discovery and the set topics of one MQTT uplink's connection."""

    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        devices: Callable[[], Sequence[DeviceSettings]],
        commands: Commands | None,
    ) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self.devices = devices
        self.commands = commands
        self.node = _slug(gateway_id)
        self.base = f"{settings.topic_prefix}/{gateway_id}"
        self.status_topic = f"{self.base}/status"
        self.set_prefix = f"{self.base}/ha/"
        # Sensors of free-form devices seen so far (kept across connections).
        self._seen: dict[str, set[str]] = {}
        # This connection's configs by topic, writable entities by command topic.
        self._configs: set[str] = set()
        self._writable: dict[str, Entity] = {}
        self._fixed: set[str] = set()
        self._connection: MqttConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Connection life.

    def attach(self, connection: MqttConnection) -> None:
        """Announce every configured entity, and listen to set topics and old configs."""
        self._connection = connection
        self._configs = set()
        self._writable = {}
        self._fixed = set()
        self._publish(self._gateway_topic(), self._gateway_config())
        for device in self.devices():
            entities, fixed = configured_entities(device)
            if fixed:
                self._fixed.add(device.id)
            names = {e.sensor for e in entities}
            for sensor in sorted(self._seen.get(device.id, set()) - names):
                entities.append(Entity(device.id, sensor))
            for entity in entities:
                self._announce(entity)
        prefix = self.settings.discovery_prefix
        connection.subscribe(
            f"{prefix}/+/{self.node}/+/config", self._on_old_config, self._on_subscribed
        )
        if self.commands is not None and self._writable:
            connection.subscribe(f"{self.set_prefix}+/+/set", self._on_set, self._on_subscribed)

    def detach(self) -> None:
        self._connection = None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def delivering(self, readings: Sequence[StoredReading]) -> None:
        """Announce the sensors of ``readings`` not announced yet (before they are sent)."""
        if self._connection is None:
            return
        for reading in readings:
            if reading.device in self._fixed:
                continue
            seen = self._seen.setdefault(reading.device, set())
            if len(seen) >= MAX_SENSORS_PER_DEVICE:
                continue
            try:
                body = json.loads(reading.payload)
                sensor, unit = body["sensor"], body.get("unit")
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if not isinstance(sensor, str) or sensor in seen:
                continue
            seen.add(sensor)
            entity = Entity(reading.device, sensor, unit if isinstance(unit, str) else None)
            if self._config_topic(entity) not in self._configs:
                self._announce(entity)

    # Configs.

    def _config_topic(self, entity: Entity) -> str:
        obj = _slug(f"{entity.device}_{entity.sensor}")
        return f"{self.settings.discovery_prefix}/{entity.component}/{self.node}/{obj}/config"

    def _gateway_topic(self) -> str:
        return f"{self.settings.discovery_prefix}/binary_sensor/{self.node}/status/config"

    def _availability(self) -> list[dict[str, str]]:
        # The status topic carries {"gateway": …, "state": "online" | "offline", …}.
        return [
            {
                "topic": self.status_topic,
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]

    def _gateway_config(self) -> dict[str, object]:
        return {
            "name": "Connectivity",
            "unique_id": f"{self.gateway_id}_status",
            "state_topic": self.status_topic,
            "value_template": "{{ value_json.state }}",
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "device": {"identifiers": [self.gateway_id], "name": self.gateway_id},
        }

    def _announce(self, entity: Entity) -> None:
        config: dict[str, object] = {
            "name": entity.sensor,
            "unique_id": f"{self.gateway_id}_{entity.device}_{entity.sensor}",
            "state_topic": f"{self.base}/{entity.device}/telemetry",
            "availability": self._availability(),
            "device": {
                "identifiers": [f"{self.gateway_id}_{entity.device}"],
                "name": entity.device,
                "via_device": self.gateway_id,
            },
        }
        # Home Assistant ignores an empty state of a switch and of a sensor with a unit;
        # a number and a sensor without one take their own state again.
        if entity.component == "switch":
            template = _latest(entity.sensor, "'ON' if r[-1].value else 'OFF'", "''")
        elif entity.component == "sensor" and entity.unit is not None:
            template = _latest(entity.sensor, "r[-1].value", "''")
        else:
            template = _latest(entity.sensor, "r[-1].value", "this.state")
        config["value_template"] = template
        if entity.unit is not None:
            config["unit_of_measurement"] = entity.unit
        kind = device_class(entity.sensor, entity.unit)
        if kind is not None and entity.component == "sensor":
            config["device_class"] = kind
            config["state_class"] = "total_increasing" if kind == "energy" else "measurement"
        if entity.component != "sensor" and self.commands is not None:
            command_topic = f"{self.set_prefix}{entity.device}/{entity.sensor}/set"
            config["command_topic"] = command_topic
            self._writable[command_topic] = entity
            if entity.component == "number":
                low, high = self._bounds(entity)
                config.update({"min": low, "max": high, "step": entity.step, "mode": "box"})
        elif entity.component != "sensor":
            entity = replace(entity, component="sensor")  # no router: shown read-only
        self._publish(self._config_topic(entity), config)

    def _bounds(self, entity: Entity) -> tuple[float, float]:
        """The bounds of the entity's [[commands.writes]] rule, offered by Home Assistant."""
        rules = self.commands.settings.writes if isinstance(self.commands, CommandRouter) else ()
        for rule in rules:
            if rule.device == entity.device and rule.sensor == entity.sensor:
                low = -UNBOUNDED if rule.min is None else rule.min
                return low, UNBOUNDED if rule.max is None else rule.max
        return -UNBOUNDED, UNBOUNDED

    def _publish(self, topic: str, body: dict[str, object] | None) -> None:
        connection = self._connection
        if connection is None:
            return
        payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        if body is not None:
            self._configs.add(topic)
        try:
            future = connection.publish(topic, payload, retain=True)
        except (UplinkError, ValueError) as err:
            log.warning("home assistant: cannot publish %r: %s", topic, err)
            return
        future.add_done_callback(lambda done: _log_refusal(topic, done))

    def _on_subscribed(self, granted: bool) -> None:
        if not granted:
            log.error("home assistant: the broker refused a subscription")

    def _on_old_config(self, message: mqtt.MQTTMessage) -> None:
        """A retained config of an earlier run: cleared unless still wanted."""
        if not message.retain or not message.payload or message.topic in self._configs:
            return
        try:
            device = json.loads(message.payload)["device"]["identifiers"][0]
        except (ValueError, KeyError, TypeError, IndexError):
            device = None
        configured = {f"{self.gateway_id}_{d.id}": d.id for d in self.devices()}
        device_id = configured.get(device) if isinstance(device, str) else None
        if device_id is not None and device_id not in self._fixed:
            return  # a free-form device's sensor: announced again when it is seen
        log.info("home assistant: clearing %s (no longer configured)", message.topic)
        self._publish(message.topic, None)

    # Writes.

    def _on_set(self, message: mqtt.MQTTMessage) -> None:
        entity = self._writable.get(message.topic)
        if entity is None or self.commands is None:
            log.warning("home assistant: %r is not a writable entity", message.topic)
            return
        task = asyncio.get_running_loop().create_task(
            self._write(entity, bytes(message.payload)), name="home-assistant-write"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, entity: Entity, payload: bytes) -> None:
        assert self.commands is not None
        value = _value(entity, payload.decode("utf-8", "replace").strip())
        request = {
            "id": f"ha-{uuid.uuid4().hex}",
            "args": {"device": entity.device, "sensor": entity.sensor, "value": value},
        }
        answer = await self.commands.handle(
            "device.write", json.dumps(request).encode(), via="home_assistant"
        )
        if answer.body.get("ok") is not True:
            # The router counted it under its reason (edge_gateway_commands_refused_total).
            log.warning(
                "home assistant: write of %s/%s refused: %s",
                entity.device,
                entity.sensor,
                answer.body.get("error"),
            )


def _value(entity: Entity, text: str) -> object:
    """The value of a set message: ON/OFF for a switch (1/0), a number for a number.
    Anything else is passed on as text, for the router to refuse with its reason."""
    if entity.component == "switch":
        return {"ON": 1, "OFF": 0}.get(text.upper(), text)
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


def _log_refusal(topic: str, future: asyncio.Future[ReasonCode]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        log.warning("home assistant: %r not sent: %s", topic, error)
    elif future.result().is_failure:
        log.warning("home assistant: the broker refused %r: %s", topic, future.result())
