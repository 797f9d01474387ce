"""Typed settings: the shape of a validated configuration file, with every default.

This module is the one place defaults live; ``docs/configuration.md`` documents
them and ``gateway.config`` turns a TOML file into these objects (or names every
bad key). Durations are seconds, sizes are bytes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.fields import (
    Invalid,
    boolean,
    choice,
    duration,
    identifier,
    key,
    string,
    string_table,
    tables,
)
from gateway.transforms import TransformSettings

Durability = Literal["full", "normal"]
Overflow = Literal["drop_oldest", "reject_new"]
MqttProtocol = Literal["5", "3.1.1"]
Priority = Literal["normal", "high"]
UplinkStart = Literal["oldest", "now"]
PRIORITIES: tuple[Priority, ...] = ("normal", "high")


def _priorities(value: object) -> dict[str, Priority]:
    table = string_table(value)
    for sensor, level in table.items():
        if level not in PRIORITIES:
            raise Invalid(f'{sensor}: must be "normal" or "high" (got "{level}")')
    return table  # type: ignore[return-value]  # every value checked just above


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    id: str = field(default_factory=socket.gethostname)
    data_dir: Path = Path("/var/lib/edge-gateway")
    log_level: str = "INFO"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    # full: every commit is fsynced (survives power loss); normal: WAL without
    # fsync per commit (survives a crash of the process, may lose the last
    # commits on power loss).
    durability: Durability = "full"
    max_bytes: int = 1024 * 1024 * 1024
    # Readings older than this are dropped even if unsent (0 = no age bound).
    max_age: float = 30 * 24 * 3600.0
    overflow: Overflow = "drop_oldest"
    # How long acknowledged readings stay for local replay (`since`) and history.
    history: float = 3600.0
    # Free space on the data directory's filesystem below which the gateway
    # reports itself degraded.
    min_free_bytes: int = 64 * 1024 * 1024
    # While readings keep coming, a transaction starts at most this long after the
    # previous one, so a steady trickle shares fsyncs (less CPU, far less SD-card
    # wear) at the cost of at most this much latency; 0 commits each arrival at once.
    commit_spacing: float = 0.005


@dataclass(frozen=True, slots=True)
class DeviceAccess:
    """What a device needs of the machine, for the service's sandbox (systemd-dropin)."""

    # Device nodes opened read-write, as configured (a serial port).
    nodes: tuple[str, ...] = ()
    # Device classes as systemd's DeviceAllow= names them ("char-gpiochip"): every node
    # of the class, for a driver whose library picks the node (gpiozero's backends).
    classes: tuple[str, ...] = ()
    # Supplementary groups that own those nodes on the target system ("gpio", "spi").
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSettings:
    """The keys of every ``[[devices]]`` section, whatever its driver.

    Each driver extends this with its own keys (``SerialLineSettings``, …) and is
    found through the driver registry (``gateway.driver_registry``); a section is
    checked against the class of the driver it names.
    """

    id: str = field(
        metadata=key(
            identifier,
            "id",
            "The device's name: the `device` field of its readings and a level of its MQTT "
            "topic. Unique within the file.",
        )
    )
    driver: str = field(
        metadata=key(
            string,
            "string",
            "How the device is read: one of the drivers below. `check-config` names the "
            "drivers this version knows.",
        )
    )
    # Sensor name -> unit, added to each reading of that sensor.
    units: dict[str, str] = field(
        default_factory=dict,
        metadata=key(
            string_table,
            "table of strings",
            'Unit per sensor name, added to that sensor\'s readings as `unit`: `{ t = "°C", '
            'h = "%" }`.',
        ),
    )
    # A device silent for longer than this is reported (0 = never expected).
    expected_interval: float = field(
        default=0.0,
        metadata=key(
            duration(positive=False),
            "duration",
            "How often the device normally sends. A device silent for `[health] "
            "device_silent_factor` times this is reported. `0`: never expected.",
        ),
    )
    # Reconnect backoff after the port fails or disappears.
    reconnect_min: float = field(
        default=0.5,
        metadata=key(
            duration(positive=True),
            "duration",
            "Shortest wait before reopening a port (or a GPIO pin) that failed or "
            "disappeared; waits grow, with jitter, up to `reconnect_max`.",
        ),
    )
    reconnect_max: float = field(
        default=30.0,
        metadata=key(
            duration(positive=True),
            "duration",
            "Longest wait between attempts; not shorter than `reconnect_min`.",
        ),
    )
    priority: Priority = field(
        default="normal",
        metadata=key(
            choice(PRIORITIES),
            "string",
            '`"high"`: the device\'s readings go out before any backlog on every uplink '
            "(alarms, door contacts); see [mqtt.md](mqtt.md#priority).",
        ),
    )
    sensor_priority: dict[str, Priority] = field(
        default_factory=dict,
        metadata=key(
            _priorities,
            "table of strings",
            'Priority per sensor name, over the device\'s: `{ alarm = "high" }`.',
        ),
    )
    enabled: bool = field(
        default=True,
        metadata=key(
            boolean, "boolean", "`false` keeps the device in the file without reading it."
        ),
    )
    # Applied to the device's samples before the store (gateway.transforms).
    transforms: tuple[TransformSettings, ...] = field(
        default=(),
        metadata=tables(
            TransformSettings,
            "Per-sensor scale and offset, rename, unit, deadband, minimum interval and "
            "windowed aggregation, one `[[devices.transforms]]` table each; see "
            "[transforms.md](transforms.md).",
        ),
    )

    def warnings(self) -> Iterator[tuple[str, str]]:
        """Keys whose value is valid but worth a second look, as ``(key, message)``."""
        return iter(())

    def device_access(self) -> DeviceAccess:
        """The device nodes, classes and groups this device opens; a driver that opens
        any says so here, so the core never lists drivers by name."""
        return DeviceAccess()


def driver_tag(name: str) -> Any:
    """The ``driver`` field of a driver's settings class: the tag of the device union."""
    return field(
        default=name,
        metadata=key(
            choice((name,)),
            "string",
            DeviceSettings.__dataclass_fields__["driver"].metadata["key"].doc,
        ),
    )


@dataclass(frozen=True, slots=True)
class MqttSettings:
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "edge"
    client_id: str = ""  # default: "edge-gateway-{gateway id}"
    protocol: MqttProtocol = "5"
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False  # disables hostname verification; for lab use only
    keepalive: int = 30
    # Messages published and not yet acknowledged by the broker.
    max_inflight: int = 32
    # Readings per telemetry message (one device per message).
    batch_max: int = 500
    # Cap on messages per second (0 = none); AWS IoT allows 100 per connection.
    max_messages_per_second: float = 0.0
    reconnect_min: float = 0.5
    reconnect_max: float = 60.0
    # While live stream clients watch (serial reads and commits are then not paced),
    # wait this long after a quiet spell for more readings before sending, so that one
    # message still carries several readings at a steady trickle (0 = off).
    linger: float = 0.005
    # The durable cursor is written at most this often (seconds; 0 = at every PUBACK).
    ack_interval: float = 1.0
    # Home Assistant MQTT discovery (gateway.uplinks.home_assistant), under this prefix.
    home_assistant: bool = False
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """The keys of an ``[[uplinks]]`` table with ``type = "websocket"``:
    docs/websocket-uplink.md."""

    url: str = "wss://127.0.0.1:8765/ingest"
    # Sent as "Authorization: Bearer …"; token_file is read again at each connection.
    token: str | None = None
    token_file: Path | None = None
    # The server's CA (default: the system's), and a client certificate for mutual TLS.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False  # disables hostname verification; for lab use only
    # Readings per batch, and batches sent and not yet acknowledged.
    batch_max: int = 1000
    max_inflight: int = 8
    # Offer permessage-deflate; used when the server accepts it.
    compress: bool = False
    # WebSocket pings this often; a link that stops answering is dropped after half of it.
    heartbeat: float = 10.0
    # A batch unacknowledged for this long means the server is stuck: reconnect.
    ack_timeout: float = 30.0
    connect_timeout: float = 10.0
    reconnect_min: float = 0.5
    reconnect_max: float = 60.0
    # Caught up and woken by one commit, wait this long for more to join the batch.
    linger: float = 0.005
    # The durable cursor is written at most this often (seconds; 0 = at every ack).
    ack_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    mqtt: MqttSettings | None = None


@dataclass(frozen=True, slots=True)
class UplinkEntry:
    """One uplink: a ``[[uplinks]]`` table, or ``[uplink.mqtt]`` (named ``mqtt``).

    ``transport`` holds the keys of its ``type`` (``MqttSettings`` for mqtt,
    ``WebSocketSettings`` for websocket); the
    uplink registry (``gateway.uplinks.registry``) builds the uplink from both.
    """

    name: str
    transport: object
    type: str = "mqtt"
    # Globs of the device ids whose readings it carries.
    devices: tuple[str, ...] = ("*",)
    # Retention does not wait for it; what is deleted before it sent it counts as lost.
    best_effort: bool = False
    # Where a new cursor starts: every reading still in the log, or those from now on.
    start: UplinkStart = "oldest"


@dataclass(frozen=True, slots=True)
class LocalSettings:
    listen: str = "127.0.0.1:8080"
    token: str | None = None
    token_file: Path | None = None
    # Origins allowed to open the stream besides the server's own.
    allowed_origins: tuple[str, ...] = ()
    cert_file: Path | None = None
    key_file: Path | None = None
    max_clients: int = 100
    # Messages queued per client before it is told of a gap.
    client_queue: int = 256
    max_inbound_bytes: int = 4096
    max_inbound_per_second: float = 10.0
    heartbeat: float = 20.0
    compress: bool = False
    # HTTP connections at once (lowered to fit the file descriptor limit), and from
    # one peer address.
    max_connections: int = 256
    max_connections_per_address: int = 32
    # A request's head must arrive within this long; an idle keep-alive connection
    # is closed after keepalive_timeout.
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    # Host names (besides the listen address, IP literals and this machine's name)
    # that /healthz and /metrics answer to; guards against DNS rebinding.
    allowed_hosts: tuple[str, ...] = ()
    metrics_require_token: bool = False


@dataclass(frozen=True, slots=True)
class HealthSettings:
    # /healthz says "degraded" when an uplink has been down for longer than this.
    uplink_down_after: float = 300.0
    # ... or a device has been silent for longer than this many expected intervals.
    device_silent_factor: float = 3.0


@dataclass(frozen=True, slots=True)
class WriteRule:
    """One ``[[commands.writes]]`` entry: a sensor of a device that may be written."""

    device: str
    sensor: str
    # Bounds for numeric values (inclusive); None: no bound on that side.
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True)
class CommandSettings:
    # Commands that may run; nothing runs unless listed here.
    allow: tuple[str, ...] = ()
    # A request larger than this is refused unread.
    max_bytes: int = 4096
    # Requests per second (over MQTT and the local API together), with a small burst.
    max_per_second: float = 10.0
    # Request ids are remembered (and their results sent again) this long, and at most
    # this many of them.
    remember: float = 24 * 3600.0
    remember_count: int = 10_000
    # Only these device/sensor pairs may be written, within their bounds.
    writes: tuple[WriteRule, ...] = ()
    # With a key, only requests signed with it run (gateway.commands.signing).
    hmac_key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    devices: tuple[DeviceSettings, ...] = ()
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    # The [[uplinks]] tables; ``all_uplinks()`` adds [uplink.mqtt].
    uplinks: tuple[UplinkEntry, ...] = ()
    local: LocalSettings | None = None
    health: HealthSettings = field(default_factory=HealthSettings)
    commands: CommandSettings = field(default_factory=CommandSettings)
    # Where the configuration was read from; used to reload it on SIGHUP.
    source: Path | None = None

    def all_uplinks(self) -> tuple[UplinkEntry, ...]:
        """Every uplink: [uplink.mqtt] as the uplink named "mqtt", then [[uplinks]]."""
        if self.uplink.mqtt is None:
            return self.uplinks
        return (UplinkEntry("mqtt", self.uplink.mqtt), *self.uplinks)
