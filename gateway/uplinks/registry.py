"""The uplink types: how an ``[[uplinks]]`` table's ``type`` becomes a running uplink.

Each type names the settings class of its own keys (``url``, ``topic_prefix``, … for
mqtt) and a factory. The configuration checks a table against its type's class
(``gateway.config``) and the gateway builds every uplink through ``create_uplink``,
so a new type is one entry in ``UPLINK_TYPES``. A type's settings class declares its
keys with ``gateway.fields.key`` (checked by ``check_table``), except ``MqttSettings``
and ``WebSocketSettings``, which ``gateway.config`` checks itself (their certificate,
key and token files are relative to the configuration file's directory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.interfaces import Commands, ReadingLog, SampleSink, Uplink
from gateway.settings import DeviceSettings, MqttSettings, UplinkEntry, WebSocketSettings
from gateway.uplinks.mqtt import MqttUplink
from gateway.uplinks.route import PriorityRules, Selection
from gateway.uplinks.websocket import WebSocketUplink

# The types the configuration contract names (docs/configuration.md).
CONTRACT_TYPES = ("mqtt", "websocket")


@dataclass(frozen=True, slots=True)
class UplinkContext:
    """What every uplink is built with besides its own settings."""

    gateway_id: str
    log: ReadingLog
    # Where readings the peer refuses for good go (the store).
    dead_letters: SampleSink | None
    commands: Commands | None
    priority: PriorityRules
    # The configured devices now (Home Assistant discovery announces them).
    devices: Callable[[], Sequence[DeviceSettings]] = tuple


UplinkFactory = Callable[[UplinkEntry, Selection, UplinkContext], Uplink]


@dataclass(frozen=True, slots=True)
class UplinkType:
    settings: type  # the class of the type's own keys
    create: UplinkFactory


def _mqtt(entry: UplinkEntry, selection: Selection, context: UplinkContext) -> Uplink:
    assert isinstance(entry.transport, MqttSettings)  # checked against it by the configuration
    return MqttUplink(
        entry.transport,
        context.gateway_id,
        context.log,
        entry.name,
        dead_letters=context.dead_letters,
        commands=context.commands,
        selection=selection,
        best_effort=entry.best_effort,
        start=entry.start,
        devices=context.devices,
    )


def _websocket(entry: UplinkEntry, selection: Selection, context: UplinkContext) -> Uplink:
    assert isinstance(entry.transport, WebSocketSettings)  # checked by the configuration
    return WebSocketUplink(
        entry.transport,
        context.gateway_id,
        context.log,
        entry.name,
        selection=selection,
        best_effort=entry.best_effort,
        start=entry.start,
    )


UPLINK_TYPES: dict[str, UplinkType] = {
    "mqtt": UplinkType(MqttSettings, _mqtt),
    "websocket": UplinkType(WebSocketSettings, _websocket),
}


def create_uplink(entry: UplinkEntry, context: UplinkContext) -> Uplink:
    """The uplink of ``entry``, carrying what its ``devices`` globs select."""
    kind = UPLINK_TYPES[entry.type]
    return kind.create(entry, Selection(entry.devices, context.priority), context)
