"""The JSON API: status, reading history and devices."""

from __future__ import annotations

import json
import re
import time

from aiohttp import web

from gateway import __version__
from gateway.globs import check_device_glob
from gateway.interfaces import CommandStatus, DeviceStatus, GatewayView
from gateway.local import health
from gateway.local.keys import COUNTERS, HUB, LATEST, VIEW
from gateway.local.latest import sensor_of
from gateway.local.stream.client import StreamCounters
from gateway.reading import MAX_SENSOR_NAME, StoredReading, join_payloads

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# With a sensor filter, one request scans at most this many log pages; the client
# continues from ``next``.
MAX_SCAN_PAGES = 20
SCAN_PAGE = 1000
_INTEGER = re.compile(r"-?[0-9]{1,20}")


def bad_request(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": text}), content_type="application/json")


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    # ASCII digits only, and few enough to parse cheaply (int() takes other scripts'
    # digits, "_" and thousands of digits).
    if not _INTEGER.fullmatch(raw):
        raise bad_request(f"{name} must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise bad_request(f"{name} must be between {low} and {high}")
    return value


def _device_status(status: DeviceStatus) -> dict[str, object]:
    body: dict[str, object] = {
        "state": status.state,
        "readings": status.readings,
        "errors": status.errors,
        "reconnects": status.reconnects,
        "pauses": status.pauses,
        "refused_names": status.refused_names,
        "last_reading_ts": status.last_reading_ts,
        "last_error": status.last_error,
    }
    if status.detail is not None:
        body[status.detail.name] = status.detail.as_json()
    return body


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_body(request.app[VIEW], request.app[HUB].counters))


def status_body(view: GatewayView, counters: StreamCounters | None) -> dict[str, object]:
    """What ``/api/v1/status`` answers; without ``counters`` (no local server), no "local"."""
    now = time.time()
    reasons = health.reasons(view, now)
    stats = view.log.stats()
    body: dict[str, object] = {
        "gateway": view.gateway_id,
        "version": __version__,
        "time": now,
        "uptime": now - view.started,
        "health": {"status": "degraded" if reasons else "ok", "reasons": reasons},
        "store": {
            "depth": stats.depth,
            "bytes": stats.bytes,
            "last_seq": stats.last_seq,
            "dropped": stats.dropped,
            "dead_letters": stats.dead_letters,
            "oldest_unsent_age": (
                None if stats.oldest_unsent_ts is None else max(0.0, now - stats.oldest_unsent_ts)
            ),
            "degraded": stats.degraded,
            "free_bytes": stats.free_bytes,
        },
        "uplinks": {
            name: {
                "state": uplink.status.state,
                "acked_seq": uplink.status.acked_seq,
                "in_flight": uplink.status.in_flight,
                "errors": uplink.status.errors,
                "lost": uplink.status.lost,
                "resent": uplink.status.resent,
                "last_error": uplink.status.last_error,
                "down_seconds": health.uplink_down_seconds(view, name, now),
            }
            for name, uplink in sorted(view.uplinks.items())
        },
        "devices": {
            device_id: _device_status(driver.status)
            for device_id, driver in sorted(view.devices.items())
        },
    }
    if counters is not None:
        body["local"] = {
            "clients": counters.clients,
            "gaps": counters.gaps,
            "closed_slow": counters.closed_slow,
            "inbound_errors": counters.inbound_errors,
            "refused_busy": counters.refused_busy,
        }
    if view.commands is not None:
        body["commands"] = command_status(view.commands.status)
    return body


# The HTTP status of a request refused before it ran; one that ran answers 200,
# with "ok" saying whether it succeeded.
REFUSAL_STATUS = {
    "too_large": 413,
    "rate_limited": 429,
    "unknown_command": 404,
    "not_allowed": 403,
}


async def command(request: web.Request) -> web.Response:
    """``POST /api/v1/commands/{name}``: the body is the request, as over MQTT."""
    commands = request.app[VIEW].commands
    if commands is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": "commands are not available"}),
            content_type="application/json",
        )
    payload = await request.read()
    answer = await commands.handle(request.match_info["name"], payload, via="local")
    status = 200 if answer.refused is None else REFUSAL_STATUS.get(answer.refused, 400)
    if status != 200:
        request.app[COUNTERS].requests_refused[str(status)] += 1
    return web.json_response(answer.body, status=status)


def command_status(status: CommandStatus) -> dict[str, object]:
    return {
        "subscribed": status.subscribed,
        "executed": {f"{c}/{o}": n for (c, o), n in sorted(status.executed.items())},
        "refused": dict(sorted(status.refused.items())),
        "duplicates": status.duplicates,
        "recent": status.recent,
    }


async def readings(request: web.Request) -> web.Response:
    """History after ``since``, ascending; ``next`` is the ``since`` of the following page."""
    readings = request.app[VIEW].log
    device = request.query.get("device") or None
    sensor = request.query.get("sensor") or None
    if device is not None:
        try:
            check_device_glob(device)
        except ValueError as exc:
            raise bad_request(f"device {exc}") from None
    if sensor is not None and len(sensor) > MAX_SENSOR_NAME:
        raise bad_request(f"sensor must be at most {MAX_SENSOR_NAME} characters")
    since = int_param(request, "since", 0, 0, 2**63 - 1)
    limit = int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    found: list[StoredReading] = []
    next_since: int | None = None
    if sensor is None:
        found = await readings.read_after(since, limit, device)
        next_since = found[-1].seq if len(found) == limit else None
    else:
        cursor = since
        for _ in range(MAX_SCAN_PAGES):
            page = await readings.read_after(cursor, SCAN_PAGE, device)
            for reading in page:
                if sensor_of(reading.payload) == sensor:
                    found.append(reading)
                    if len(found) == limit:
                        break
            if len(found) == limit:
                next_since = found[-1].seq
                break
            if len(page) < SCAN_PAGE:
                next_since = None
                break
            cursor = page[-1].seq
            next_since = cursor
    body = (
        b'{"readings":'
        + join_payloads([r.payload for r in found])
        + b',"next":'
        + (b"null" if next_since is None else str(next_since).encode())
        + b"}"
    )
    return web.Response(body=body, content_type="application/json")


async def devices(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    latest = request.app[LATEST]
    body = {
        "devices": [
            {
                "id": device_id,
                **_device_status(driver.status),
                "last": latest.of(device_id),
            }
            for device_id, driver in sorted(view.devices.items())
        ]
    }
    return web.json_response(body)
