"""The live stream: committed readings sent to WebSocket clients, with replay.

``frames`` builds the bytes on the wire, ``client`` serves one client (its queue, replay
and sender), ``hub`` fans each commit out over every client.
"""

from gateway.local.stream.client import SEND_TIMEOUT, StreamClient, StreamCounters
from gateway.local.stream.frames import MESSAGE_READINGS, readings_message, text_frame
from gateway.local.stream.hub import StreamHub

__all__ = [
    "MESSAGE_READINGS",
    "SEND_TIMEOUT",
    "StreamClient",
    "StreamCounters",
    "StreamHub",
    "readings_message",
    "text_frame",
]
