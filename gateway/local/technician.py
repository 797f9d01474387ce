"""The API behind the technician's panels of the dashboard: a sensor's history in buckets,
the dead letters with their raw bytes, and the commands this gateway allows.

Every parameter is checked before anything is read: a bad one is a 400 with the rule it
broke (counted in ``requests_refused``), a window longer than a day included. The reads
go through ``LogQueries`` (read-only, one at a time, bounded).
"""

from __future__ import annotations

import json
import re
import time
from functools import partial

from aiohttp import web

from gateway.local.keys import COUNTERS, QUERIES, VIEW
from gateway.local.rest import bad_request, int_param
from gateway.reading import MAX_SENSOR_NAME
from gateway.store import read_only

DEFAULT_WINDOW = "1h"
MIN_WINDOW = 10.0
MAX_WINDOW = 86_400.0
DEFAULT_POINTS = 300
MIN_POINTS = 10
MAX_POINTS = 1000
DEFAULT_DEAD_LETTERS = 50
MAX_DEAD_LETTERS = 200
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_WINDOW = re.compile(r"([0-9]{1,6})([smhd])")
_EPOCH = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
DEVICE_RULE = "must be a device id: 1 to 128 letters, digits, '.', '_' and '-'"
_BUCKET_COLUMNS = ("t", "min", "max", "mean", "count")


def _device(request: web.Request, *, required: bool) -> str | None:
    device = request.query.get("device", "")
    if not device:
        if required:
            raise bad_request("device is required")
        return None
    if not _DEVICE_ID.fullmatch(device):
        raise bad_request(f"device {DEVICE_RULE}")
    return device


def _window(request: web.Request) -> float:
    raw = request.query.get("window", DEFAULT_WINDOW)
    match = _WINDOW.fullmatch(raw)
    if match is None:
        raise bad_request('window must be a duration like "1h", "1d", "15m" or "90s"')
    seconds = int(match[1]) * _UNITS[match[2]]
    if not MIN_WINDOW <= seconds <= MAX_WINDOW:
        raise bad_request(f"window must be from {MIN_WINDOW:g} s to 1d ({MAX_WINDOW:g} s)")
    return float(seconds)


def _end(request: web.Request, now: float) -> float:
    raw = request.query.get("end", "")
    if raw == "":
        return now
    if not _EPOCH.fullmatch(raw):
        raise bad_request("end must be a time in seconds since the epoch, like 1764086400.5")
    end = float(raw)
    if end > now + MAX_WINDOW:
        raise bad_request("end must not be more than a day in the future")
    return end


async def history(request: web.Request) -> web.Response:
    """``GET /api/v1/history``: one sensor over a window, min/max/mean/count per bucket."""
    device = _device(request, required=True)
    assert device is not None
    sensor = request.query.get("sensor", "")
    if not 1 <= len(sensor) <= MAX_SENSOR_NAME:
        raise bad_request(f"sensor is required: a name of 1 to {MAX_SENSOR_NAME} characters")
    window = _window(request)
    end = _end(request, time.time())
    points = int_param(request, "points", DEFAULT_POINTS, MIN_POINTS, MAX_POINTS)
    query = read_only.HistoryQuery(device, sensor, end - window, end, points)
    try:
        found = await request.app[QUERIES].run(partial(read_only.history, query=query))
    except read_only.QueryTooCostly:
        request.app[COUNTERS].requests_refused["503"] += 1
        raise web.HTTPServiceUnavailable(
            text=json.dumps(
                {
                    "error": "the history query was stopped at its cost bound; ask for a "
                    "shorter window"
                }
            ),
            content_type="application/json",
        ) from None
    return web.json_response(
        {
            "device": device,
            "sensor": sensor,
            "from": found.start,
            "to": found.end,
            "bucket_seconds": found.width,
            "columns": _BUCKET_COLUMNS,
            "buckets": [[b.t, b.min, b.max, b.mean, b.count] for b in found.buckets],
            "rows_in_window": found.rows_in_window,
            "rows_scanned": found.rows_scanned,
            "sampled": found.sampled,
        }
    )


async def dead_letters(request: web.Request) -> web.Response:
    """``GET /api/v1/dead-letters``: the newest first page, older pages with ``before``."""
    device = _device(request, required=False)
    limit = int_param(request, "limit", DEFAULT_DEAD_LETTERS, 1, MAX_DEAD_LETTERS)
    before = int_param(request, "before", 2**63 - 1, 1, 2**63 - 1)
    rows = await request.app[QUERIES].run(
        partial(read_only.dead_letters, limit=limit, device=device, before=before)
    )
    body = {
        "dead_letters": [
            {
                "id": row.id,
                "ts": row.ts,
                "device": row.device,
                "reason": row.reason,
                "hex": row.raw.hex(),
                "text": read_only.printable(row.raw),
            }
            for row in reversed(rows)
        ],
        "next": rows[0].id if len(rows) == limit else None,
    }
    return web.json_response(body)


async def commands(request: web.Request) -> web.Response:
    """``GET /api/v1/commands``: what the command panel may offer."""
    view = request.app[VIEW]
    settings = view.settings.commands
    return web.json_response(
        {
            "available": view.commands is not None,
            "allow": list(settings.allow),
            "writes": [
                {"device": w.device, "sensor": w.sensor, "min": w.min, "max": w.max}
                for w in settings.writes
            ],
            "signed": settings.hmac_key_file is not None,
            "devices": sorted(view.devices),
        }
    )
