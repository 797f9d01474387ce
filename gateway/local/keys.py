"""Typed keys for the local server's application state."""

from __future__ import annotations

from aiohttp import web

from gateway.interfaces import GatewayView
from gateway.local.auth import Guard, HostRule
from gateway.local.connections import ConnectionCounters
from gateway.local.latest import LatestReadings
from gateway.local.log_queries import LogQueries
from gateway.local.stream import StreamHub

VIEW = web.AppKey("view", GatewayView)
GUARD = web.AppKey("guard", Guard)
HUB = web.AppKey("hub", StreamHub)
LATEST = web.AppKey("latest", LatestReadings)
HOSTS = web.AppKey("hosts", HostRule)
COUNTERS = web.AppKey("counters", ConnectionCounters)
QUERIES = web.AppKey("queries", LogQueries)
