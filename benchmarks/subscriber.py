"""The cloud side: an MQTT subscriber (QoS 1) that counts readings, in its own process.

Prints a ``progress`` JSON line every 50 ms (messages, readings, distinct
readings, time of the first and last arrival). With ``--arrivals``
it records ``time.time()`` at the arrival of each counter value ``n`` (with the
reading's ``ts``) and writes them to that file when stopped (SIGTERM).

    python -m benchmarks.subscriber --port P [--format gateway|naive] [--arrivals FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

PROGRESS_INTERVAL = 0.05


class Bitmap:
    """A growable set of non-negative integers, one byte each."""

    def __init__(self) -> None:
        self.bits = bytearray(1 << 16)
        self.count = 0

    def add(self, key: int) -> bool:
        """Add ``key``; True when it was not there yet."""
        if key >= len(self.bits):
            self.bits.extend(bytearray(max(key + 1 - len(self.bits), len(self.bits))))
        if self.bits[key]:
            return False
        self.bits[key] = 1
        self.count += 1
        return True


class Counter:
    def __init__(self, fmt: str, record_arrivals: bool) -> None:
        self.fmt = fmt
        self.record = record_arrivals
        self.messages = 0
        self.readings = 0
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None
        self.bad = 0
        self.seen = Bitmap()
        # Per device, the counter values seen: gaps in ``n`` are lines the device
        # wrote that never arrived (dropped anywhere on the way, not only by the broker).
        self.counters: dict[str, tuple[Bitmap, list[int]]] = {}
        # n -> (arrival time, the reading's ts: when the target read the line)
        self.arrivals: dict[int, tuple[float, float]] = {}

    def _counter(self, device: str, n: int) -> None:
        entry = self.counters.get(device)
        if entry is None:
            entry = self.counters[device] = (Bitmap(), [n, n])
        bitmap, bounds = entry
        bitmap.add(n)
        bounds[0] = min(bounds[0], n)
        bounds[1] = max(bounds[1], n)

    def gaps(self) -> int:
        """Counter values missing between the lowest and the highest seen, all devices."""
        return sum(hi - lo + 1 - b.count for b, (lo, hi) in self.counters.values())

    def on_payload(self, payload: bytes | bytearray) -> None:
        now = time.time()
        mono = time.monotonic()
        self.messages += 1
        if self.first_arrival is None:
            self.first_arrival = mono
        self.last_arrival = mono
        try:
            obj: dict[str, Any] = json.loads(payload)
        except ValueError:
            self.bad += 1
            return
        if self.fmt == "gateway":
            for r in obj.get("readings", ()):
                self.readings += 1
                self.seen.add(r["seq"])
                if r.get("sensor") == "n":
                    n = int(r["value"])
                    self._counter(r["device"], n)
                    if self.record and n not in self.arrivals:
                        self.arrivals[n] = (now, r["ts"])
        else:
            data = obj.get("data", {})
            self.readings += len(data)
            if "n" in data:
                n = int(data["n"])
                # The naive program has no seq: one device, so its counter is the key.
                self.seen.add(n)
                self._counter(obj.get("device", ""), n)
                if self.record and n not in self.arrivals:
                    self.arrivals[n] = (now, obj.get("ts", now))

    def progress(self) -> dict[str, Any]:
        return {
            "event": "progress",
            "mono": time.monotonic(),
            "messages": self.messages,
            "readings": self.readings,
            "distinct": self.seen.count,
            "first_arrival": self.first_arrival,
            "last_arrival": self.last_arrival,
            "bad": self.bad,
            "gaps": self.gaps(),
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="#")
    parser.add_argument("--format", choices=["gateway", "naive"], default="gateway")
    parser.add_argument("--arrivals", type=Path)
    args = parser.parse_args()

    counter = Counter(args.format, args.arrivals is not None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        c.subscribe(args.topic, qos=1)

    def on_subscribe(*_: object) -> None:
        print(json.dumps({"event": "subscribed"}), flush=True)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        # Status messages share the prefix; only telemetry carries readings.
        if msg.topic.endswith("/status"):
            return
        counter.on_payload(msg.payload)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", args.port, keepalive=60)
    client.loop_start()
    while not stop.wait(PROGRESS_INTERVAL):
        print(json.dumps(counter.progress()), flush=True)
    client.loop_stop()
    client.disconnect()
    if args.arrivals is not None:
        args.arrivals.write_text(json.dumps(counter.arrivals))
    print(json.dumps(counter.progress()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
