"""Turning a TOML configuration file into ``Settings``, or naming every bad key.

Validation never stops at the first problem: the whole file is checked and each
problem is reported with its key path (``devices[1].baudrate``), so one run of
``edge-gateway check-config`` shows everything to fix. ``docs/configuration.md``
describes every key; the defaults live in ``gateway.settings``.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import socket
import ssl
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

from gateway.errors import ConfigError, ConfigProblem
from gateway.reading import SENSOR_NAME_RULE, SensorNames
from gateway.settings import (
    DeviceSettings,
    Durability,
    GatewaySettings,
    GpioMode,
    HealthSettings,
    LineFormat,
    LocalSettings,
    MqttProtocol,
    MqttSettings,
    Overflow,
    Parity,
    Settings,
    StoreSettings,
    UplinkSettings,
)
from gateway.uplinks.broker import BrokerAddress

# Standard serial speeds that USB adapters and UARTs on small boards support.
BAUDRATES = (300, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)

# Drivers that read a serial port and so cannot start without one.
PORT_DRIVERS = frozenset({"serial_line"})

# Device keys that only some drivers use. A key given to a driver listed here that
# does not use it is refused, so that a key copied from another device's section
# never looks as if it took effect.
SERIAL_KEYS = frozenset(
    {
        "port",
        "baudrate",
        "bytesize",
        "parity",
        "stopbits",
        "format",
        "columns",
        "max_line_bytes",
        "read_interval",
    }
)
GPIO_KEYS = frozenset({"pin", "pull_up", "bounce", "mode", "sample_interval", "sensor"})
DRIVER_KEYS = {"serial_line": SERIAL_KEYS, "gpio_input": GPIO_KEYS}
_DRIVER_ONLY_KEYS = SERIAL_KEYS | GPIO_KEYS

# BCM numbers of the GPIO lines of a Raspberry Pi's SoC, and the pin names gpiozero
# reads ("GPIO17", "BCM17", "BOARD11", "WPI0", "J8:11"); the board's own pinout decides
# at open whether the pin exists.
MAX_BCM_PIN = 53
_PIN_NAME = re.compile(r"(?:GPIO|BCM|BOARD|WPI)[0-9]{1,2}|[A-Z][A-Z0-9]*:[0-9]{1,2}|[0-9]{1,2}")
PIN_RULE = (
    f"must be a BCM number from 0 to {MAX_BCM_PIN} or a pin name like "
    '"GPIO17", "BOARD11" or "J8:11"'
)

# Ids become an MQTT topic level and a URL path segment: no "/", "+", "#",
# whitespace, "%" or "$" (topics starting with "$" are reserved by brokers).
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ID_RULE = 'must be 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit'

# Shortest accepted bearer token for the local server.
MIN_TOKEN_LENGTH = 16

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
SIZE_RULE = 'must be a size: bytes as an integer, or a string like "64kB", "512MiB", "1GB"'

_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*")
DURATION_RULE = (
    'must be a duration: seconds as a number, or a string like "500ms", "30s", "5m", "2h", "7d"'
)


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


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as ``"512MiB"``; ``ValueError`` if neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match[2].lower() not in _SIZE_UNITS:
        raise ValueError(SIZE_RULE)
    size = Decimal(match[1]) * _SIZE_UNITS[match[2].lower()]
    if size != size.to_integral_value():
        raise ValueError("must be a whole number of bytes")
    return int(size)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"5m"``; ``ValueError`` if neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(DURATION_RULE)
    return float(Decimal(match[1]) * _DURATION_UNITS[match[2]])


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


class _Invalid(Exception):
    """A value is wrong; the message says how, the caller knows where."""


# Every converter takes the raw TOML value and returns the settings value or
# raises _Invalid.
Convert = Callable[[object], Any]


def _kind(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    kinds |= {list: "an array", dict: "a table"}
    return kinds.get(type(value), type(value).__name__)


def toml_value(value: object) -> str:
    """``value`` as TOML would spell it: for messages, and for writing configurations.

    A string becomes a basic string (JSON's escapes are all valid TOML escapes; TOML
    also forbids a raw DEL), so any path or token can be written safely.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value).replace("\x7f", "\\u007f")
    return str(value)


def _one_of(values: Iterable[object]) -> str:
    return ", ".join(toml_value(v) for v in values)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, not {_kind(value)}")
    return value


def _text(value: object) -> str:
    text = _string(value)
    if not text.strip():
        raise _Invalid("must not be empty")
    return text


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, not {_kind(value)}")
    return value


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


def _size(minimum: int) -> Convert:
    def convert(value: object) -> int:
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        if size < minimum:
            raise _Invalid(f"must be at least {minimum} bytes (got {size})")
        return size

    return convert


def _duration(*, positive: bool) -> Convert:
    def convert(value: object) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        if positive and seconds <= 0:
            raise _Invalid("must be longer than 0 seconds")
        return seconds

    return convert


def _bounded_duration(low: float, high: float) -> Convert:
    as_duration = _duration(positive=False)

    def convert(value: object) -> float:
        seconds: float = as_duration(value)
        if not low <= seconds <= high:
            raise _Invalid(f"must be from {low:g} to {high:g} seconds")
        return seconds

    return convert


def _whole_seconds(low: int, high: int) -> Convert:
    as_duration = _duration(positive=False)

    def convert(value: object) -> int:
        seconds = as_duration(value)
        if seconds != int(seconds) or not low <= seconds <= high:
            raise _Invalid(f"must be a whole number of seconds from {low} to {high}")
        return int(seconds)

    return convert


def _choice(values: Iterable[object]) -> Convert:
    allowed = tuple(values)
    kinds = {type(v) for v in allowed}

    def convert(value: object) -> Any:
        # Compare types too: true must not pass as 1, nor 9600.0 as 9600.
        if value not in allowed or type(value) not in kinds:
            hint = _did_you_mean(value, allowed) if isinstance(value, str) else ""
            raise _Invalid(f"must be one of {_one_of(allowed)} (got {toml_value(value)}){hint}")
        return value

    return convert


def _log_level(value: object) -> str:
    level = _string(value).upper()
    if level not in LOG_LEVELS:
        raise _Invalid(f"must be one of {_one_of(LOG_LEVELS)} (got {toml_value(value)})")
    return level


def _identifier(value: object) -> str:
    text = _string(value)
    if not ID_PATTERN.fullmatch(text):
        raise _Invalid(f"{ID_RULE} (got {toml_value(text)})")
    return text


def _topic_prefix(value: object) -> str:
    text = _text(value)
    if any(c in text for c in "+#\0") or "" in text.split("/"):
        raise _Invalid(
            'must be topic levels separated by "/", without "+", "#", '
            f'or an empty level (got "{text}")'
        )
    return text


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"must be an array of strings, not {_kind(value)}")
    items = tuple(value)
    if not all(isinstance(v, str) and v.strip() for v in items):
        raise _Invalid("must be an array of non-empty strings")
    duplicates = sorted({v for v in items if items.count(v) > 1})
    if duplicates:
        raise _Invalid(f"names {_one_of(duplicates)} more than once")
    return items


def _sensor_name(value: object) -> str:
    # Checked here too, so a configured name is refused now rather than each reading
    # becoming a dead letter at run time.
    name = _text(value)
    if SensorNames(limit=1).refusal(name) is not None:
        raise _Invalid(f"must be {SENSOR_NAME_RULE} (got {toml_value(name)})")
    return name


def _sensor_names(value: object) -> tuple[str, ...]:
    names = _strings(value)
    for name in names:
        _sensor_name(name)
    return names


def _string_table(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table, not {_kind(value)}")
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    if bad:
        raise _Invalid(f"values must be strings ({_one_of(bad)} is not)")
    return dict(value)


def _gpio_pin(value: object) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_BCM_PIN:
            raise _Invalid(f"must be a BCM number from 0 to {MAX_BCM_PIN} (got {value})")
        return value
    if not isinstance(value, str):
        raise _Invalid(f"{PIN_RULE}, not {_kind(value)}")
    if not _PIN_NAME.fullmatch(value):
        raise _Invalid(f"{PIN_RULE} (got {toml_value(value)})")
    return value


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


def _did_you_mean(word: str, candidates: Iterable[object]) -> str:
    names = [c for c in candidates if isinstance(c, str)]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not close:
        lowered = {n.lower(): n for n in names}
        close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[c] for c in close]
    return f' (did you mean "{close[0]}"?)' if close else ""


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
                "local": _pass,
                "health": _pass,
            },
        )
        gateway = self.gateway(top.values.get("gateway", {}))
        store = self.store(top.values.get("store", {}))
        devices = self.devices(top.values.get("devices", []))
        uplink = self.uplink(top.values.get("uplink", {}))
        local = self.local(top.values["local"]) if "local" in top.values else None
        health = self.health(top.values.get("health", {}))
        if self.problems or devices is None:
            return None
        return Settings(
            gateway=gateway,
            store=store,
            devices=devices,
            uplink=uplink,
            local=local,
            health=health,
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

    def device(self, data: object, path: str) -> DeviceSettings | None:
        # Imported here: the driver registry imports every driver module, which
        # validation of other sections does not need.
        from drivers import DRIVERS  # noqa: PLC0415

        spec: dict[str, Convert] = {
            "id": _identifier,
            "driver": _choice(sorted(DRIVERS)),
            "port": _text,
            "baudrate": _choice(BAUDRATES),
            "bytesize": _choice((5, 6, 7, 8)),
            "parity": _choice(get_args(Parity)),
            "stopbits": _choice((1, 1.5, 2)),
            "format": _choice(get_args(LineFormat)),
            "columns": _sensor_names,
            "units": _string_table,
            "max_line_bytes": _size(16),
            "read_interval": _bounded_duration(0.0, 1.0),
            "expected_interval": _duration(positive=False),
            "reconnect_min": _duration(positive=True),
            "reconnect_max": _duration(positive=True),
            "enabled": _boolean,
            "pin": _gpio_pin,
            "pull_up": _boolean,
            "bounce": _duration(positive=False),
            "mode": _choice(get_args(GpioMode)),
            "sample_interval": _duration(positive=False),
            "sensor": _sensor_name,
        }
        section = self.section(data, path, spec, required=("id", "driver"))
        if not section.ok("id", "driver"):
            return None
        device = DeviceSettings(**section.values)
        if section.ok("port") and device.driver in PORT_DRIVERS and not device.port:
            self.problem(section.key("port"), f'required by driver "{device.driver}"')
        self.driver_keys(section, device)
        if section.ok("format", "columns"):
            if device.format == "csv" and not device.columns:
                self.problem(section.key("columns"), 'required when format = "csv"')
            if device.format != "csv" and device.columns:
                self.problem(section.key("columns"), 'only used with format = "csv"')
        self.ordered(section, device.reconnect_min, device.reconnect_max)
        return device

    def uplink(self, data: object) -> UplinkSettings:
        section = self.section(data, "uplink", {"mqtt": _pass})
        mqtt = self.mqtt(section.values["mqtt"]) if "mqtt" in section.values else None
        return UplinkSettings(mqtt=mqtt)

    def mqtt(self, data: object) -> MqttSettings:
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
        }
        section = self.section(data, "uplink.mqtt", spec)
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

    # Rules across keys -------------------------------------------------

    def driver_keys(self, section: _Section, device: DeviceSettings) -> None:
        """Keys of other drivers are refused; a driver's own keys may be required."""
        own = DRIVER_KEYS.get(device.driver)
        if own is None:
            return
        for key in sorted(_DRIVER_ONLY_KEYS - own):
            if key in section.given:
                self.problem(section.key(key), f'not used by driver "{device.driver}"')
                # Refused once: no rule about its value may complain of it again.
                section.bad.add(key)
        if device.driver != "gpio_input":
            return
        if device.pin is None and section.ok("pin"):
            self.problem(section.key("pin"), 'required by driver "gpio_input"')
        counts = device.mode == "counter" and section.ok("mode", "sample_interval")
        if counts and device.sample_interval <= 0:
            message = 'must be longer than 0 seconds with mode = "counter"'
            self.problem(section.key("sample_interval"), message)

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
