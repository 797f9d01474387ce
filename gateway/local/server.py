"""The local server's application: routes, access rules, lifecycle, and ``serve``."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import WSCloseCode, web

from gateway.config import parse_listen
from gateway.errors import ConfigError, ConfigProblem, GatewayError, StoreError
from gateway.interfaces import GatewayView
from gateway.local import health, metrics_page, rest, technician
from gateway.local.auth import Guard, HostRule, load_token, unauthorized
from gateway.local.connections import (
    GUARD_KEY,
    ConnectionCounters,
    ConnectionGuard,
    GuardedSite,
    track_requests,
)
from gateway.local.keys import COUNTERS, GUARD, HOSTS, HUB, LATEST, QUERIES, VIEW
from gateway.local.latest import LatestReadings
from gateway.local.log_queries import LogQueries
from gateway.local.redact import redact_server_logs
from gateway.local.stream import SEND_TIMEOUT, StreamHub
from gateway.settings import LocalSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STREAM_PATH = "/api/v1/stream"
# Answered without a token: checked against the Host header instead.
OPEN_PATHS = frozenset({"/healthz", "/metrics"})
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The dashboard loads nothing from elsewhere; the policy makes that a rule for the browser too.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def local_settings(view: GatewayView) -> LocalSettings:
    return view.settings.local or LocalSettings()


@web.middleware
async def _store_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A log that cannot be read is the gateway's trouble, told as 503, not a crash."""
    try:
        return await handler(request)
    except StoreError as exc:
        log.error("%s %s: %s", request.method, request.path, exc)
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": f"the reading log is unavailable: {exc}"}),
            content_type="application/json",
        ) from exc


@web.middleware
async def _require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if path in OPEN_PATHS and not request.app[HOSTS].allows(request):
        raise web.HTTPForbidden(
            text=json.dumps({"error": "host not allowed"}), content_type="application/json"
        )
    metrics_closed = path == "/metrics" and local_settings(request.app[VIEW]).metrics_require_token
    if path.startswith("/api/") or metrics_closed:
        allow_query = path == STREAM_PATH
        if not request.app[GUARD].authorized(request, allow_query=allow_query):
            raise unauthorized()
    return await handler(request)


@web.middleware
async def _count_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refused request is counted by its status (400 bad parameter, 401 token, ...)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if 400 <= exc.status < 500 and exc.status != 404:
            request.app[COUNTERS].requests_refused[str(exc.status)] += 1
        raise


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


async def healthz(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    reasons = health.reasons(view, time.time())
    return web.json_response(
        {"status": "degraded" if reasons else "ok", "gateway": view.gateway_id, "reasons": reasons}
    )


async def metrics(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    process = await asyncio.to_thread(metrics_page.read_process_stats)
    text = metrics_page.render(
        view, request.app[HUB].counters, process, time.time(), request.app[COUNTERS]
    )
    return web.Response(body=text.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


async def stream(request: web.Request) -> web.StreamResponse:
    if not request.app[GUARD].origin_allowed(request):
        raise web.HTTPForbidden(
            text=json.dumps({"error": "origin not allowed"}), content_type="application/json"
        )
    return await request.app[HUB].handle(request)


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _listen_to_log(app: web.Application) -> AsyncIterator[None]:
    readings = app[VIEW].log
    listeners = (app[HUB].on_commit, app[LATEST].on_commit)
    for listener in listeners:
        readings.add_listener(listener)
    yield
    for listener in listeners:
        readings.remove_listener(listener)


async def _close_streams(app: web.Application) -> None:
    await app[HUB].close_all()


async def _close_queries(app: web.Application) -> None:
    app[QUERIES].close()


def create_app(view: GatewayView, *, send_timeout: float = SEND_TIMEOUT) -> web.Application:
    """The local server for ``view``; ``send_timeout`` bounds a send to a stuck client."""
    settings = local_settings(view)
    app = web.Application(
        middlewares=[track_requests, _count_refusals, _require_token, _store_errors]
    )
    app[VIEW] = view
    app[GUARD] = Guard(load_token(settings), settings.allowed_origins)
    app[HOSTS] = HostRule(_listen_host(settings), settings.allowed_hosts)
    app[COUNTERS] = ConnectionCounters()
    app[HUB] = StreamHub(view.gateway_id, view.log, settings, send_timeout)
    app[LATEST] = LatestReadings()
    app[QUERIES] = LogQueries(lambda: view.settings.gateway.data_dir)
    app.cleanup_ctx.append(_listen_to_log)
    app.on_shutdown.append(_close_streams)
    app.on_cleanup.append(_close_queries)
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", rest.status)
    app.router.add_get("/api/v1/readings", rest.readings)
    app.router.add_get("/api/v1/devices", rest.devices)
    app.router.add_post("/api/v1/commands/{name}", rest.command)
    app.router.add_get("/api/v1/commands", technician.commands)
    app.router.add_get("/api/v1/history", technician.history)
    app.router.add_get("/api/v1/dead-letters", technician.dead_letters)
    app.router.add_get(STREAM_PATH, stream)
    app.router.add_get("/", dashboard)
    app.router.add_static("/static", STATIC_DIR)
    return app


def _listen_host(settings: LocalSettings) -> str:
    try:
        return parse_listen(settings.listen)[0]
    except ValueError:
        return ""


def _tls_context(settings: LocalSettings) -> ssl.SSLContext | None:
    if settings.cert_file is None and settings.key_file is None:
        return None
    if settings.cert_file is None or settings.key_file is None:
        raise ConfigError([ConfigProblem("local.cert_file", "cert_file and key_file go together")])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_certificate(context, settings)
    return context


def _load_certificate(context: ssl.SSLContext, settings: LocalSettings) -> None:
    """Load (or, on reload, replace) the certificate new handshakes present."""
    assert settings.cert_file is not None
    assert settings.key_file is not None
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"local server: cannot load certificate and key: {exc}") from exc


async def _reload_secrets(app: web.Application, tls: ssl.SSLContext | None) -> None:
    """Read the token file and the certificate again (``systemctl reload``).

    A file that cannot be read leaves the secret in use as it was.
    """
    settings = local_settings(app[VIEW])
    try:
        token = await asyncio.to_thread(load_token, settings)
        if tls is not None:
            # Tried on a fresh context first: a pair that fails to load half-way would
            # leave the live context with a certificate and a key that do not match.
            await asyncio.to_thread(_tls_context, settings)
            await asyncio.to_thread(_load_certificate, tls, settings)
    except GatewayError as exc:
        log.error("reload: %s; the local server keeps its previous secrets", exc)
        return
    if token is None and settings.token_file is not None:
        # An emptied file (caught mid-write, say) must not lock the API.
        log.error("reload: %s is empty; the local server keeps its token", settings.token_file)
        return
    if app[GUARD].set_token(token):
        log.info("local server: token replaced; streams opened with the old one are closed")
        await app[HUB].close_all(WSCloseCode.POLICY_VIOLATION, b"token changed")
    if tls is not None:
        log.info("local server: certificate reloaded from %s", settings.cert_file)


async def serve(
    view: GatewayView, bound: asyncio.Event | None = None, reload: asyncio.Event | None = None
) -> None:
    """Serve ``view`` on ``[local].listen`` (https when a certificate is set) until cancelled.

    ``bound`` is set once the socket listens, so that readiness is only announced
    when ``/healthz`` answers. Each time ``reload`` is set, the token file and the
    certificate are read again.
    """
    settings = local_settings(view)
    try:
        host, port = parse_listen(settings.listen)
    except ValueError as exc:
        raise ConfigError([ConfigProblem("local.listen", str(exc))]) from exc
    tls = await asyncio.to_thread(_tls_context, settings)
    redact_server_logs()
    app = create_app(view)
    guard = ConnectionGuard(settings, app[COUNTERS], tls)
    app[GUARD_KEY] = guard
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=settings.keepalive_timeout)
    await runner.setup()
    try:
        site = GuardedSite(runner, host, port, guard)
        try:
            await site.start()
        except OSError as exc:
            raise GatewayError(f"local server: cannot listen on {settings.listen}: {exc}") from exc
        scheme = "https" if tls else "http"
        log.info("local server on %s://%s", scheme, settings.listen)
        if bound is not None:
            bound.set()
        reload = reload or asyncio.Event()
        while True:
            await reload.wait()
            reload.clear()
            await _reload_secrets(app, tls)
    finally:
        await runner.cleanup()
