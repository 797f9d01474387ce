"""Where and how to reach the broker: its URL, credentials and TLS context.

Reading credential and certificate files is blocking I/O: ``load_credentials``
runs on a worker thread, once per connection attempt, so that rotated
certificates and passwords are picked up on the next reconnect.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from gateway.settings import MqttSettings

Transport = Literal["tcp", "websockets"]

_SCHEMES: dict[str, tuple[Transport, bool, int]] = {
    "mqtt": ("tcp", False, 1883),
    "mqtts": ("tcp", True, 8883),
    "ws": ("websockets", False, 80),
    "wss": ("websockets", True, 443),
}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    transport: Transport
    tls: bool
    path: str  # the HTTP path of a WebSocket endpoint

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt://``, ``mqtts://``, ``ws://`` or ``wss://`` host, optional port and path."""
        parts = urlsplit(url)
        scheme = _SCHEMES.get(parts.scheme)
        if scheme is None:
            raise ValueError(f"unsupported scheme in {url!r}: use mqtt, mqtts, ws or wss")
        transport, tls, default_port = scheme
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        port = parts.port or default_port  # raises ValueError for a bad port
        path = parts.path or "/mqtt"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.hostname, port, transport, tls, path)


@dataclass(frozen=True, slots=True)
class Credentials:
    password: str | None
    ssl_context: ssl.SSLContext | None


def load_credentials(settings: MqttSettings, tls: bool) -> Credentials:
    """Blocking: reads the password file and builds the TLS context."""
    password = settings.password
    if settings.password_file is not None:
        password = settings.password_file.read_text(encoding="utf-8").strip()
    return Credentials(password, tls_context(settings) if tls else None)


class TlsFiles(Protocol):
    """The TLS keys an uplink's settings have (the MQTT and the WebSocket uplink's)."""

    @property
    def ca_file(self) -> Path | None: ...
    @property
    def cert_file(self) -> Path | None: ...
    @property
    def key_file(self) -> Path | None: ...
    @property
    def tls_insecure(self) -> bool: ...


def tls_context(settings: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2 or later, the broker's certificate verified against ``ca_file`` (or the
    system's CAs) and, unless ``tls_insecure``, its host name checked.

    ``tls_insecure`` only turns off the host name check: the chain of trust is
    always verified, so a lab broker needs at least its CA in ``ca_file``.
    """
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.cert_file is not None:
        context.load_cert_chain(
            str(settings.cert_file),
            str(settings.key_file) if settings.key_file is not None else None,
        )
    if settings.tls_insecure:
        context.check_hostname = False
    return context
