"""Telemetry messages from stored readings, and the order in which they may be acknowledged.

Pure code, no I/O. ``TelemetryPlanner`` groups one read of the log by device
into messages of up to ``batch_max`` readings, building each payload by joining
the stored bytes (readings are never decoded or re-encoded here). ``AckOrder``
tracks which reads are fully acknowledged: the durable cursor may only move to
a seq below which *every* reading is acknowledged, while PUBACKs of different
devices' messages may arrive in any order.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.reading import StoredReading, join_payloads

# MQTT's largest packet (the Remaining Length field's maximum).
MQTT_MAX_PACKET = 268_435_455
# Fixed header, packet id, topic length field and a v5 property block fit in this.
_PACKET_OVERHEAD = 64


@dataclass(slots=True, eq=False)
class Batch:
    """One read of the log: every stored reading with seq in (previous batch, ``last_seq``]."""

    last_seq: int
    # First seq of each of its messages not yet resolved (acknowledged or
    # refused for good); each reading is in exactly one message, so these differ.
    unresolved: set[int] = field(default_factory=set)


@dataclass(slots=True, eq=False)
class TelemetryMessage:
    device: str
    topic: str
    payload: bytes
    readings: list[StoredReading]
    batch: Batch
    first_sent: float | None = None  # monotonic time of the first publish
    failures: int = 0  # failure reason codes received so far

    @property
    def count(self) -> int:
        return len(self.readings)

    @property
    def first_seq(self) -> int:
        return self.readings[0].seq


class TelemetryPlanner:
    """Splits a read into per-device messages; caches each device's topic and header."""

    def __init__(self, gateway_id: str, topic_prefix: str, batch_max: int) -> None:
        self.gateway_id = gateway_id
        self.topic_prefix = topic_prefix
        self.batch_max = max(1, batch_max)
        self.max_packet = MQTT_MAX_PACKET
        self._heads: dict[str, tuple[str, bytes]] = {}

    def _head(self, device: str) -> tuple[str, bytes]:
        cached = self._heads.get(device)
        if cached is None:
            topic = f"{self.topic_prefix}/{self.gateway_id}/{device}/telemetry"
            head = (
                b'{"gateway":'
                + _json(self.gateway_id)
                + b',"device":'
                + _json(device)
                + b',"readings":'
            )
            cached = self._heads[device] = (topic, head)
        return cached

    def plan(self, readings: Sequence[StoredReading], batch: Batch) -> list[TelemetryMessage]:
        """Messages for ``readings`` (ascending seq), each device's in ascending seq."""
        by_device: dict[str, list[StoredReading]] = {}
        for reading in readings:
            group = by_device.get(reading.device)
            if group is None:
                by_device[reading.device] = [reading]
            else:
                group.append(reading)
        messages: list[TelemetryMessage] = []
        for device, group in by_device.items():
            topic, head = self._head(device)
            room = self.max_packet - _PACKET_OVERHEAD - len(topic.encode()) - len(head) - 3
            for part in self._split(group, room):
                payload = head + join_payloads([r.payload for r in part]) + b"}"
                messages.append(TelemetryMessage(device, topic, payload, part, batch))
        batch.unresolved = {m.first_seq for m in messages}
        return messages

    def _split(self, group: list[StoredReading], room: int) -> list[list[StoredReading]]:
        """Runs of at most ``batch_max`` readings whose joined payloads fit in ``room`` bytes.

        A reading too large on its own still gets a message of its own: the
        broker's refusal then sends it to the dead letters instead of blocking.
        """
        parts: list[list[StoredReading]] = []
        for start in range(0, len(group), self.batch_max):
            run = group[start : start + self.batch_max]
            if sum(len(r.payload) + 1 for r in run) <= room:
                parts.append(run)
                continue
            current: list[StoredReading] = []
            size = 0
            for reading in run:
                if current and size + len(reading.payload) + 1 > room:
                    parts.append(current)
                    current, size = [], 0
                current.append(reading)
                size += len(reading.payload) + 1
            parts.append(current)
        return parts


def _json(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


class AckOrder:
    """The highest seq below which every reading is resolved, batches kept in read order.

    Within the oldest open batch, every reading below the first seq of its
    oldest unresolved message is resolved: the cursor may move that far even
    while a message behind it waits (for instance one the broker refuses).
    """

    def __init__(self, confirmed: int) -> None:
        self.confirmed = confirmed
        self._batches: deque[Batch] = deque()

    @property
    def open_batches(self) -> int:
        return len(self._batches)

    def add(self, batch: Batch) -> bool:
        """Track ``batch`` (after planning it); True when ``confirmed`` moved."""
        self._batches.append(batch)
        return self._advance()

    def resolve(self, message: TelemetryMessage) -> bool:
        """``message`` is resolved; True when ``confirmed`` moved."""
        message.batch.unresolved.discard(message.first_seq)
        return self._advance()

    def _advance(self) -> bool:
        before = self.confirmed
        while self._batches and not self._batches[0].unresolved:
            self.confirmed = self._batches.popleft().last_seq
        if self._batches:
            self.confirmed = max(self.confirmed, min(self._batches[0].unresolved) - 1)
        return self.confirmed != before
