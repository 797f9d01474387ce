"""The local server: live stream, REST, /metrics, /healthz and the dashboard."""

from gateway.local.server import create_app, serve

__all__ = ["create_app", "serve"]
