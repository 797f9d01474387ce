"""Typed settings: the shape of a validated configuration file, with every default.

This module is the one place defaults live; ``docs/configuration.md`` documents
them and ``gateway.config`` turns a TOML file into these objects (or names every
bad key). Durations are seconds, sizes are bytes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Durability = Literal["full", "normal"]
Overflow = Literal["drop_oldest", "reject_new"]
LineFormat = Literal["kv", "csv", "json"]
MqttProtocol = Literal["5", "3.1.1"]
Parity = Literal["N", "E", "O", "M", "S"]
GpioMode = Literal["level", "counter"]


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
class DeviceSettings:
    id: str
    driver: str
    port: str = ""
    baudrate: int = 9600
    bytesize: int = 8
    parity: Parity = "N"
    stopbits: float = 1
    format: LineFormat = "kv"
    # For format = "csv": the sensor name of each column, in order.
    columns: tuple[str, ...] = ()
    # Sensor name -> unit, added to each reading of that sensor.
    units: dict[str, str] = field(default_factory=dict)
    # Longest accepted line; a longer one becomes a dead letter.
    max_line_bytes: int = 4096
    # serial_line: after a read that empties the port, the next read waits this long,
    # so a device sending hundreds of lines a second is read in chunks (one wake of
    # the gateway per chunk, not per line) at the cost of at most this much latency;
    # its readings share the chunk's read time. A line after a quiet spell is read at
    # once. 0 reads every line as it arrives.
    read_interval: float = 0.018
    # A device silent for longer than this is reported (0 = never expected).
    expected_interval: float = 0.0
    # Reconnect backoff after the port fails or disappears.
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    enabled: bool = True
    # gpio_input: a BCM number (17) or a gpiozero pin name ("GPIO17", "BOARD11"), as
    # gpiozero takes it, so the names in its pinout tables work unchanged.
    pin: int | str | None = None
    # gpio_input: pull the pin up so a contact or open collector to ground reads as
    # active; most door contacts, relays and meter outputs are wired that way.
    pull_up: bool = True
    # gpio_input: a level must hold this long before it counts, so contact bounce and
    # electrical spikes never become readings or pulses.
    bounce: float = 0.01
    # gpio_input: "level" reports every change of state; "counter" counts pulses.
    mode: GpioMode = "level"
    # gpio_input: level: a reading of the state this often even without a change, so a
    # silent input is told apart from a dead one (0 = changes only); counter: how often
    # the count and rate are reported.
    sample_interval: float = 60.0
    # gpio_input: the sensor name of the state (level) or of the count (counter, whose
    # rate is then "<sensor>_rate"); unset: "state", or "count" and "rate".
    sensor: str = ""


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


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    mqtt: MqttSettings | None = None


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
class Settings:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    devices: tuple[DeviceSettings, ...] = ()
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    local: LocalSettings | None = None
    health: HealthSettings = field(default_factory=HealthSettings)
    # Where the configuration was read from; used to reload it on SIGHUP.
    source: Path | None = None
