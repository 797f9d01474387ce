"""Turning a TOML configuration file into ``Settings``, or naming every bad key.

Validation never stops at the first problem: the whole file is checked and each
problem is reported with its key path (``devices[1].baudrate``), so one run of
``edge-gateway check-config`` shows everything to fix. ``docs/configuration.md``
describes every key; the defaults live in ``gateway.settings``, a device's driver keys
in its driver's settings class (``gateway.fields`` checks those).
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import ssl
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

from gateway.commands.names import COMMANDS
from gateway.commands.signing import load_key
from gateway.driver_registry import drivers
from gateway.errors import ConfigError, ConfigProblem
from gateway.fields import ID_PATTERN, ID_RULE, Convert, check_table, keys_of
from gateway.fields import Invalid as _Invalid
from gateway.fields import boolean as _boolean
from gateway.fields import bounded_duration as _bounded_duration
from gateway.fields import choice as _choice
from gateway.fields import did_you_mean as _did_you_mean
from gateway.fields import duration as _duration
from gateway.fields import identifier as _identifier
from gateway.fields import kind_of as _kind
from gateway.fields import one_of as _one_of
from gateway.fields import parse_duration as parse_duration  # noqa: PLC0414 - public here too
from gateway.fields import parse_size as parse_size  # noqa: PLC0414 - public here too
from gateway.fields import size as _size
from gateway.fields import string as _string
from gateway.fields import strings as _strings
from gateway.fields import text as _text
from gateway.fields import toml_value as toml_value  # noqa: PLC0414 - public here too
from gateway.globs import check_device_glob
from gateway.settings import (
    CommandSettings,
    DeviceSettings,
    Durability,
    GatewaySettings,
    HealthSettings,
    LocalSettings,
    MqttProtocol,
    MqttSettings,
    Overflow,
    Settings,
    StoreSettings,
    UplinkEntry,
    UplinkSettings,
    UplinkStart,
    WebSocketSettings,
    WriteRule,
)
from gateway.uplinks.broker import BrokerAddress
from gateway.uplinks.registry import CONTRACT_TYPES, UPLINK_TYPES
from gateway.uplinks.ws_protocol import Endpoint

# The keys of every device section; the others belong to its driver.
COMMON_DEVICE_KEYS = frozenset(keys_of(DeviceSettings))
# Drivers are found in the metadata of installed packages: a source tree that was never
# installed (or not since drivers became entry points) has none.
NO_DRIVERS = (
    "no driver is installed: drivers are found through the edge_gateway.drivers entry "
    "points of installed packages (install edge-gateway with pip, e.g. pip install -e .)"
)

# Shortest accepted bearer token for the local server.
MIN_TOKEN_LENGTH = 16

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def load_config(path: Path) -> Settings:
    """Read and validate a configuration file; raise ``ConfigError`` naming every problem."""
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem(where, f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (bad byte at offset {exc.start})"
        raise ConfigError([ConfigProblem(where, message)]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(where, _toml_error_message(exc))]) from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], source: Path | None) -> Settings:
    """Validate parsed TOML; relative paths are resolved against ``source``'s directory."""
    source = source.absolute() if source is not None else None
    parser = _Parser(source.parent if source is not None else None)
    settings = parser.settings(data, source)
    if parser.problems or settings is None:
        raise ConfigError(parser.problems)
    return settings


_LISTEN_V6 = re.compile(r"\[([^\]]+)\]:([0-9]{1,5})")
_LISTEN_HOST = re.compile(r"([^\s:\[\]/]*):([0-9]{1,5})")


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``"host:port"``, ``"[v6]:port"`` or ``":port"`` (every interface; host "").

    ``ValueError`` if it is none of these.
    """
    rule = f'must be "host:port", "[IPv6]:port" or ":port" (got {listen!r})'
    match = _LISTEN_V6.fullmatch(listen)
    if match is not None:
        try:
            ipaddress.IPv6Address(match[1])
        except ValueError:
            raise ValueError(f"has an invalid IPv6 address (got {listen!r})") from None
    else:
        match = _LISTEN_HOST.fullmatch(listen)
    if match is None:
        raise ValueError(rule)
    port = int(match[2])
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be from 1 to 65535 (got {port})")
    return match[1], port


def _integer(low: int, high: int | None = None) -> Convert:
    def convert(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(f"must be an integer, not {_kind(value)}")
        if high is not None and not low <= value <= high:
            raise _Invalid(f"must be from {low} to {high} (got {value})")
        if value < low:
            raise _Invalid("must be a positive integer" if low == 1 else f"must be at least {low}")
        return value

    return convert


def _number(*, positive: bool) -> Convert:
    def convert(value: object) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _Invalid(f"must be a number, not {_kind(value)}")
        if not math.isfinite(value):
            raise _Invalid("must be a finite number")
        if positive and value <= 0:
            raise _Invalid(f"must be a positive number (got {value})")
        if value < 0:
            raise _Invalid(f"must be zero or more (got {value})")
        return float(value)

    return convert


def _whole_seconds(low: int, high: int) -> Convert:
    as_duration = _duration(positive=False)

    def convert(value: object) -> int:
        seconds = as_duration(value)
        if seconds != int(seconds) or not low <= seconds <= high:
            raise _Invalid(f"must be a whole number of seconds from {low} to {high}")
        return int(seconds)

    return convert


def _log_level(value: object) -> str:
    level = _string(value).upper()
    if level not in LOG_LEVELS:
        raise _Invalid(f"must be one of {_one_of(LOG_LEVELS)} (got {toml_value(value)})")
    return level


def _command_names(value: object) -> tuple[str, ...]:
    names = _strings(value)
    for name in names:
        if name not in COMMANDS:
            raise _Invalid(
                f"{name!r} is not a command: one of {_one_of(COMMANDS)}"
                + _did_you_mean(name, COMMANDS)
            )
    return names


def _finite(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Invalid(f"must be a number, not {_kind(value)}")
    if not math.isfinite(value):
        raise _Invalid("must be a finite number")
    return float(value)


def _topic_prefix(value: object) -> str:
    text = _text(value)
    if any(c in text for c in "+#\0") or "" in text.split("/"):
        raise _Invalid(
            'must be topic levels separated by "/", without "+", "#", '
            f'or an empty level (got "{text}")'
        )
    return text


def _uplink_type(value: object) -> str:
    name = _string(value)
    if name in UPLINK_TYPES:
        return name
    if name in CONTRACT_TYPES:
        raise _Invalid(
            f'"{name}" uplinks are not available in this version; '
            f"available: {_one_of(UPLINK_TYPES)}"
        )
    raise _Invalid(f"must be one of {_one_of(CONTRACT_TYPES)} (got {toml_value(value)})")


def _device_globs(value: object) -> tuple[str, ...]:
    globs = _strings(value)
    if not globs:
        raise _Invalid('must name at least one glob (["*"]: every device)')
    for glob in globs:
        try:
            check_device_glob(glob)
        except ValueError as exc:
            raise _Invalid(f"{toml_value(glob)} {exc}") from None
    return globs


def _origins(value: object) -> tuple[str, ...]:
    origins = []
    for item in _strings(value):
        parts = urlsplit(item.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise _Invalid(f'must be origins like "https://host:port" (got {toml_value(item)})')
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return tuple(origins)


_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?"
)


def _host_names(value: object) -> tuple[str, ...]:
    names = _strings(value)
    for name in names:
        if not _HOST_NAME.fullmatch(name):
            raise _Invalid(f"must be DNS host names without a port (got {toml_value(name)})")
    return tuple(n.rstrip(".").lower() for n in names)


def _token(value: object) -> str:
    token = _string(value)
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise _Invalid(f"must be at least {MIN_TOKEN_LENGTH} characters, without spaces")
    return token


def _broker_url(value: object) -> str:
    url = _string(value)
    try:
        address = BrokerAddress.parse(url)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise _Invalid("must not hold credentials; use username and password or password_file")
    if parts.port == 0:
        raise _Invalid(f"has port 0 (got {url!r})")
    if parts.fragment:
        raise _Invalid(f"must not have a fragment (got {url!r})")
    if address.transport == "tcp" and (parts.path not in ("", "/") or parts.query):
        raise _Invalid(f"must not have a path or query with {parts.scheme}:// (got {url!r})")
    return url


def _checked(check: Callable[[str], object]) -> Convert:
    """A string converter from a parse function that raises ValueError."""

    def convert(value: object) -> str:
        text = _string(value)
        try:
            check(text)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        return text

    return convert


def _toml_error_message(exc: tomllib.TOMLDecodeError) -> str:
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(exc))
    if match is not None:
        return f"invalid TOML at line {match[2]}, column {match[3]}: {match[1]}"
    return f"invalid TOML: {exc}"


@dataclass(slots=True)
class _Section:
    """The good values of one table, the keys it gave, and those whose value was bad."""

    path: str
    values: dict[str, Any] = field(default_factory=dict)
    given: set[str] = field(default_factory=set)
    bad: set[str] = field(default_factory=set)

    def ok(self, *keys: str) -> bool:
        return not self.bad.intersection(keys)

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


class _Parser:
    def __init__(self, base: Path | None) -> None:
        self.base = base
        self.problems: list[ConfigProblem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(path, message))

    def section(
        self, data: object, path: str, spec: Mapping[str, Convert], required: Iterable[str] = ()
    ) -> _Section:
        section = _Section(path)
        if not isinstance(data, dict):
            self.problem(path, f"must be a table, not {_kind(data)}")
            section.bad.update(spec)
            return section
        section.given.update(data)
        for key, value in data.items():
            convert = spec.get(key)
            if convert is None:
                self.problem(section.key(key), "unknown key" + _did_you_mean(key, spec))
                continue
            try:
                section.values[key] = convert(value)
            except _Invalid as exc:
                self.problem(section.key(key), str(exc))
                section.bad.add(key)
        for key in required:
            if key not in data:
                self.problem(section.key(key), "required")
                section.bad.add(key)
        return section

    # Paths -------------------------------------------------------------

    def path(self, value: object) -> Path:
        path = Path(_text(value))
        return self.base / path if self.base is not None else path

    def readable_file(self, value: object) -> Path:
        path = self.path(value)
        if not path.exists():
            raise _Invalid(f"{path} does not exist")
        if not path.is_file():
            raise _Invalid(f"{path} is not a file")
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise _Invalid(f"{path} cannot be read: {exc.strerror}") from None
        return path

    def hmac_key_file(self, value: object) -> Path:
        path = self.readable_file(value)
        try:
            load_key(path)
        except (OSError, ValueError) as exc:
            raise _Invalid(str(exc)) from None
        return path

    def token_file(self, value: object) -> Path:
        path = self.readable_file(value)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise _Invalid(f"{path} cannot be read: {exc}") from None
        if not token:
            raise _Invalid(f"{path} is empty")
        try:
            _token(token)
        except _Invalid as exc:
            raise _Invalid(f"the token in {path} {exc}") from None
        return path

    # Sections ----------------------------------------------------------

    def settings(self, data: dict[str, Any], source: Path | None) -> Settings | None:
        top = self.section(
            data,
            "",
            {
                "gateway": _pass,
                "store": _pass,
                "devices": _pass,
                "uplink": _pass,
                "uplinks": _pass,
                "local": _pass,
                "health": _pass,
                "commands": _pass,
            },
        )
        gateway = self.gateway(top.values.get("gateway", {}))
        store = self.store(top.values.get("store", {}))
        devices = self.devices(top.values.get("devices", []))
        uplink = self.uplink(top.values.get("uplink", {}))
        uplinks = self.uplinks(top.values.get("uplinks", []), uplink.mqtt is not None)
        local = self.local(top.values["local"]) if "local" in top.values else None
        health = self.health(top.values.get("health", {}))
        known = None if devices is None else {d.id for d in devices}
        commands = self.commands(top.values.get("commands", {}), known)
        if self.problems or devices is None:
            return None
        return Settings(
            gateway=gateway,
            store=store,
            devices=devices,
            uplink=uplink,
            uplinks=uplinks,
            local=local,
            health=health,
            commands=commands,
            source=source,
        )

    def gateway(self, data: object) -> GatewaySettings:
        spec = {"id": _identifier, "data_dir": self.path, "log_level": _log_level}
        section = self.section(data, "gateway", spec)
        if "id" not in section.values and "id" not in section.bad:
            host = socket.gethostname()
            if not ID_PATTERN.fullmatch(host):
                self.problem(section.key("id"), f"required: the host name {host!r} {ID_RULE}")
            section.values["id"] = host
        return GatewaySettings(**section.values)

    def store(self, data: object) -> StoreSettings:
        spec = {
            "durability": _choice(get_args(Durability)),
            "max_bytes": _size(1024 * 1024),
            "max_age": _duration(positive=False),
            "overflow": _choice(get_args(Overflow)),
            "history": _duration(positive=False),
            "min_free_bytes": _size(0),
            "commit_spacing": _bounded_duration(0.0, 1.0),
        }
        return StoreSettings(**self.section(data, "store", spec).values)

    def devices(self, data: object) -> tuple[DeviceSettings, ...] | None:
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            self.problem("devices", "must be an array of tables ([[devices]] sections)")
            return None
        devices: list[DeviceSettings] = []
        first_index: dict[str, int] = {}
        for index, item in enumerate(data):
            device = self.device(item, f"devices[{index}]")
            if device is None:
                continue
            if device.id in first_index:
                self.problem(
                    f"devices[{index}].id",
                    f'"{device.id}" is already the id of devices[{first_index[device.id]}]',
                )
            first_index.setdefault(device.id, index)
            devices.append(device)
        return tuple(devices)

    def device(self, data: dict[str, object], path: str) -> DeviceSettings | None:
        """One device, checked against the settings type of the driver it names."""
        registry = drivers()
        name = data.get("driver")
        spec = registry.get(name) if isinstance(name, str) else None
        if spec is None:
            # Without a known driver only the keys every device has can be checked.
            if "driver" in data and not registry:
                self.problem(f"{path}.driver", NO_DRIVERS)
            elif "driver" in data:
                try:
                    _choice(registry)(name)
                except _Invalid as exc:
                    self.problem(f"{path}.driver", str(exc))
            common = keys_of(DeviceSettings)
            known = {k: v for k, v in data.items() if k in common}
            check_table(DeviceSettings, known, path, self.problems)
            return None
        own = keys_of(spec.settings)
        refused = f'not used by driver "{spec.name}"'
        foreign = {
            key: refused
            for other in registry.values()
            for key in keys_of(other.settings)
            if key not in own
        }

        def required(key: str) -> str:
            return "required" if key in COMMON_DEVICE_KEYS else f'required by driver "{spec.name}"'

        checked = check_table(
            spec.settings, data, path, self.problems, foreign=foreign, required=required
        )
        device: DeviceSettings | None = checked.settings
        if device is None:
            return None
        given = checked.given
        section = _Section(path, checked.values, set(given.given), set(given.bad))
        self.ordered(section, device.reconnect_min, device.reconnect_max)
        return device

    def uplink(self, data: object) -> UplinkSettings:
        if isinstance(data, dict) and "websocket" in data:
            message = 'a WebSocket uplink is an [[uplinks]] table with type = "websocket"'
            self.problem("uplink.websocket", message)
            data = {k: v for k, v in data.items() if k != "websocket"}
        section = self.section(data, "uplink", {"mqtt": _pass})
        mqtt = self.mqtt(section.values["mqtt"]) if "mqtt" in section.values else None
        return UplinkSettings(mqtt=mqtt)

    def websocket(self, data: object, path: str) -> WebSocketSettings:
        spec: dict[str, Convert] = {
            "url": _checked(Endpoint.parse),
            "token": _token,
            "token_file": self.token_file,
            "ca_file": self.readable_file,
            "cert_file": self.readable_file,
            "key_file": self.readable_file,
            "tls_insecure": _boolean,
            "batch_max": _integer(1, 100_000),
            "max_inflight": _integer(1, 1024),
            "compress": _boolean,
            "heartbeat": _duration(positive=True),
            "ack_timeout": _duration(positive=True),
            "connect_timeout": _duration(positive=True),
            "reconnect_min": _duration(positive=True),
            "reconnect_max": _duration(positive=True),
            "linger": _duration(positive=False),
            "ack_interval": _duration(positive=False),
        }
        section = self.section(data, path, spec)
        websocket = WebSocketSettings(**section.values)
        if section.ok("url") and not Endpoint.parse(websocket.url).tls:
            for key in ("ca_file", "cert_file", "key_file", "tls_insecure"):
                if section.values.get(key):
                    self.problem(section.key(key), 'only used with "wss://" urls')
        self.certificate(section)
        self.exclusive(section, "token", "token_file")
        self.ordered(section, websocket.reconnect_min, websocket.reconnect_max)
        return websocket

    def uplinks(self, data: object, legacy: bool) -> tuple[UplinkEntry, ...]:
        """The ``[[uplinks]]`` tables; ``legacy``: ``[uplink.mqtt]`` (named "mqtt") is there."""
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            hint = " (one MQTT uplink alone: [uplink.mqtt])" if isinstance(data, dict) else ""
            self.problem("uplinks", f"must be an array of tables ([[uplinks]] sections){hint}")
            return ()
        entries: list[UplinkEntry] = []
        first: dict[str, str] = {"mqtt": "[uplink.mqtt]"} if legacy else {}
        for index, item in enumerate(data):
            path = f"uplinks[{index}]"
            entry = self.uplink_entry(item, path)
            if entry is None:
                continue
            if entry.name in first:
                message = f'"{entry.name}" is already the name of {first[entry.name]}'
                self.problem(f"{path}.name", message)
            first.setdefault(entry.name, path)
            entries.append(entry)
        return tuple(entries)

    def uplink_entry(self, data: dict[str, object], path: str) -> UplinkEntry | None:
        common: dict[str, Convert] = {
            "name": _identifier,
            "type": _uplink_type,
            "devices": _device_globs,
            "best_effort": _boolean,
            "start": _choice(get_args(UplinkStart)),
        }
        own = {k: v for k, v in data.items() if k in common}
        section = self.section(own, path, common, required=("name",))
        kind = UPLINK_TYPES.get(section.values.get("type", "mqtt"))
        rest = {k: v for k, v in data.items() if k not in common}
        if kind is None:
            return None
        transport: object
        if kind.settings is MqttSettings:
            transport = self.mqtt(rest, path)
        elif kind.settings is WebSocketSettings:
            transport = self.websocket(rest, path)
        else:
            transport = check_table(kind.settings, rest, path, self.problems).settings
        if section.bad or transport is None:
            return None
        return UplinkEntry(transport=transport, **section.values)

    def mqtt(self, data: object, path: str = "uplink.mqtt") -> MqttSettings:
        spec: dict[str, Convert] = {
            "url": _broker_url,
            "topic_prefix": _topic_prefix,
            "client_id": _string,
            "protocol": _choice(get_args(MqttProtocol)),
            "username": _text,
            "password": _string,
            "password_file": self.readable_file,
            "ca_file": self.readable_file,
            "cert_file": self.readable_file,
            "key_file": self.readable_file,
            "tls_insecure": _boolean,
            "keepalive": _whole_seconds(1, 65535),
            "max_inflight": _integer(1, 65535),
            "batch_max": _integer(1),
            "max_messages_per_second": _number(positive=False),
            "reconnect_min": _duration(positive=True),
            "reconnect_max": _duration(positive=True),
            "linger": _duration(positive=False),
            "ack_interval": _duration(positive=False),
            "home_assistant": _boolean,
            "discovery_prefix": _topic_prefix,
        }
        section = self.section(data, path, spec)
        mqtt = MqttSettings(**section.values)
        if section.ok("url") and not BrokerAddress.parse(mqtt.url).tls:
            for key in ("ca_file", "cert_file", "key_file", "tls_insecure"):
                if section.values.get(key):
                    self.problem(section.key(key), 'only used with "mqtts://" or "wss://" urls')
        self.certificate(section)
        self.exclusive(section, "password", "password_file")
        if mqtt.protocol == "3.1.1" and mqtt.username is None:
            for key in ("password", "password_file"):
                if key in section.values:
                    self.problem(section.key(key), "needs username with protocol 3.1.1")
        self.ordered(section, mqtt.reconnect_min, mqtt.reconnect_max)
        return mqtt

    def local(self, data: object) -> LocalSettings:
        spec: dict[str, Convert] = {
            "listen": _checked(parse_listen),
            "token": _token,
            "token_file": self.token_file,
            "allowed_origins": _origins,
            "cert_file": self.readable_file,
            "key_file": self.readable_file,
            "max_clients": _integer(1),
            "client_queue": _integer(1),
            "max_inbound_bytes": _size(64),
            "max_inbound_per_second": _number(positive=True),
            "heartbeat": _duration(positive=True),
            "compress": _boolean,
            "max_connections": _integer(1),
            "max_connections_per_address": _integer(1),
            "header_timeout": _bounded_duration(0.5, 300.0),
            "keepalive_timeout": _bounded_duration(0.5, 3600.0),
            "allowed_hosts": _host_names,
            "metrics_require_token": _boolean,
        }
        section = self.section(data, "local", spec)
        self.exclusive(section, "token", "token_file")
        if not {"token", "token_file"} & section.given and section.ok("token", "token_file"):
            self.problem(section.key("token"), "required (or token_file)")
        self.certificate(section)
        return LocalSettings(**section.values)

    def health(self, data: object) -> HealthSettings:
        spec = {
            "uplink_down_after": _duration(positive=True),
            "device_silent_factor": _number(positive=True),
        }
        return HealthSettings(**self.section(data, "health", spec).values)

    def commands(self, data: object, devices: set[str] | None) -> CommandSettings:
        """``devices``: the ids of the file's devices, which write rules must name."""
        spec: dict[str, Convert] = {
            "allow": _command_names,
            "max_bytes": _size(64),
            "max_per_second": _number(positive=True),
            "remember": _duration(positive=True),
            "remember_count": _integer(1, 1_000_000),
            "writes": _pass,
            "hmac_key_file": self.hmac_key_file,
        }
        section = self.section(data, "commands", spec)
        writes = section.values.pop("writes", [])
        if not isinstance(writes, list):
            self.problem(section.key("writes"), "must be an array of tables ([[commands.writes]])")
            writes = []
        rules = []
        for index, item in enumerate(writes):
            rule = self.write_rule(item, f"commands.writes[{index}]", devices)
            if rule is not None:
                rules.append(rule)
        return CommandSettings(**section.values, writes=tuple(rules))

    def write_rule(self, data: object, path: str, devices: set[str] | None) -> WriteRule | None:
        spec: dict[str, Convert] = {
            "device": _identifier,
            "sensor": _string,
            "min": _finite,
            "max": _finite,
        }
        section = self.section(data, path, spec, required=("device", "sensor"))
        if section.bad:
            return None
        rule = WriteRule(**section.values)
        if devices is not None and rule.device not in devices:
            self.problem(section.key("device"), f"no device {rule.device!r} in the file")
        if rule.min is not None and rule.max is not None and rule.min > rule.max:
            self.problem(section.key("max"), f"must not be less than min ({rule.min})")
        return rule

    # Rules across keys -------------------------------------------------

    def certificate(self, section: _Section) -> None:
        """``cert_file`` and ``key_file`` come together and load as a certificate and key,
        so that a wrong file fails here, not when the connection or server starts."""
        self.pair(section, "cert_file", "key_file")
        both = {"cert_file", "key_file"}
        if not both <= section.given or not section.ok(*both):
            return
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(section.values["cert_file"], section.values["key_file"])
        except (OSError, ssl.SSLError) as exc:
            self.problem(section.key("cert_file"), f"does not load with key_file: {exc}")

    def pair(self, section: _Section, first: str, second: str) -> None:
        given = {first, second} & section.given
        if len(given) == 1:
            (missing,) = {first, second} - given
            self.problem(section.key(missing), f"required together with {given.pop()}")

    def exclusive(self, section: _Section, first: str, second: str) -> None:
        if {first, second} <= section.given:
            self.problem(section.key(second), f"give either {first} or {second}, not both")

    def ordered(self, section: _Section, low: float, high: float) -> None:
        if not section.ok("reconnect_min", "reconnect_max") or low <= high:
            return
        if "reconnect_max" in section.given:
            message = f"must not be shorter than reconnect_min ({low:g}s)"
            self.problem(section.key("reconnect_max"), message)
        else:
            message = f"must not be longer than reconnect_max ({high:g}s)"
            self.problem(section.key("reconnect_min"), message)


def _pass(value: object) -> object:
    """Tables checked by their own section parser."""
    return value


def device_warnings(settings: Settings) -> list[ConfigProblem]:
    """What is valid in the devices but worth a second look, by key path (each driver says)."""
    return [
        ConfigProblem(f"devices[{index}].{key}", message)
        for index, device in enumerate(settings.devices)
        for key, message in device.warnings()
    ]
