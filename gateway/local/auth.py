"""Who may use the local API: a shared bearer token, and for the stream an Origin check."""

from __future__ import annotations

import hmac
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


class Guard:
    """Checks requests against the token and the Origin allowlist."""

    def __init__(self, token: str | None, allowed_origins: tuple[str, ...]) -> None:
        self._token = token.encode() if token else None
        self._origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)

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
        return hmac.compare_digest(presented.encode(), self._token)

    def origin_allowed(self, request: web.Request) -> bool:
        """Same origin, or one listed in ``allowed_origins``; no Origin (not a browser) passes."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        own = f"{request.scheme}://{request.host}".lower()
        return origin == own or origin in self._origins


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
