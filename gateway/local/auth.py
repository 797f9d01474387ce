"""Who may use the local API: a shared bearer token, an Origin check for the stream,
and a Host check that keeps DNS-rebinding pages away from the open endpoints."""

from __future__ import annotations

import hmac
import ipaddress
import socket
from pathlib import Path

from aiohttp import web

from gateway.errors import GatewayError
from gateway.settings import LocalSettings


def load_token(settings: LocalSettings) -> str | None:
    """The configured token (inline, else the stripped content of ``token_file``)."""
    if settings.token:
        return settings.token
    if settings.token_file is None:
        return None
    try:
        token = Path(settings.token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewayError(f"local.token_file: cannot read {settings.token_file}: {exc}") from exc
    return token or None


def _bytes(text: str) -> bytes:
    # Header and query values that were not UTF-8 arrive as lone surrogates; they
    # compare as bytes like any other wrong token instead of failing to encode.
    return text.encode("utf-8", "surrogatepass")


class Guard:
    """Checks requests against the token and the Origin allowlist."""

    def __init__(self, token: str | None, allowed_origins: tuple[str, ...]) -> None:
        self._token = _bytes(token) if token else None
        self._origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)

    def set_token(self, token: str | None) -> bool:
        """Replace the token (a rotated ``token_file``); True if it changed."""
        new = _bytes(token) if token else None
        changed = new != self._token
        self._token = new
        return changed

    def authorized(self, request: web.Request, *, allow_query: bool) -> bool:
        """True when the request carries the token.

        Browsers cannot set headers on a WebSocket, so the stream also accepts
        ``?token=``; the REST endpoints only take the header, which keeps the token
        out of access logs and browser history for everything but the stream.
        """
        if self._token is None:
            # No token configured: the API stays closed rather than open to the network.
            return False
        presented = _bearer(request)
        if presented is None and allow_query:
            presented = request.query.get("token")
        if presented is None:
            return False
        return hmac.compare_digest(_bytes(presented), self._token)

    def origin_allowed(self, request: web.Request) -> bool:
        """Same origin, or one listed in ``allowed_origins``; no Origin (not a browser) passes."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        own = f"{request.scheme}://{request.host}".lower()
        return origin == own or origin in self._origins


class HostRule:
    """Which ``Host`` headers the endpoints without a token answer to.

    A DNS-rebinding page reaches the gateway under the attacker's own host name, so
    only names the gateway is known by pass: the listen host, this machine's name
    (and ``NAME.local``), ``localhost`` and ``allowed_hosts``. An IP address always
    passes: a page served from an address is that address's own, no rebinding there.
    A request without ``Host`` is not from a browser and passes too.
    """

    def __init__(self, listen_host: str, allowed_hosts: tuple[str, ...]) -> None:
        machine = socket.gethostname().lower()
        names = {"localhost", machine, f"{machine}.local", *allowed_hosts}
        if listen_host and not _is_ip(listen_host):
            names.add(listen_host.lower())
        self._names = frozenset(n.rstrip(".").lower() for n in names)

    def allows(self, request: web.Request) -> bool:
        host = request.headers.get("Host")
        if host is None:
            return True
        name = _strip_port(host.strip())
        return _is_ip(name) or name.rstrip(".").lower() in self._names


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def unauthorized() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text='{"error":"missing or wrong token"}',
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="edge-gateway"'},
    )
