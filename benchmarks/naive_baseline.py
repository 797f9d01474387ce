"""The baseline: what a user writes by hand without the gateway.

Read a line from the serial port, turn ``k=v`` pairs into JSON, publish it with
paho at QoS 1 (network loop on paho's own thread, default settings). No store:
whatever is in paho's memory when the process dies or the broker is away is
lost. The benchmarks run it against the same simulator, broker and subscriber
as the gateway, so every figure of the gateway is also a ratio to this one.

    python -m benchmarks.naive_baseline --serial PATH --port P [--device ID]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import paho.mqtt.client as mqtt
import serial
from paho.mqtt.enums import CallbackAPIVersion


def parse(line: bytes) -> dict[str, float | str]:
    data: dict[str, float | str] = {}
    for pair in line.decode(errors="replace").replace(",", " ").split():
        key, _, value = pair.partition("=")
        try:
            data[key] = float(value)
        except ValueError:
            data[key] = value
    return data


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serial", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="naive-1")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    port = serial.Serial(args.serial, 115200, timeout=1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    topic = f"naive/{args.device}/telemetry"
    while True:
        line = port.readline()
        if not line.strip():
            continue
        payload = {"device": args.device, "ts": time.time(), "data": parse(line)}
        client.publish(topic, json.dumps(payload), qos=1)


if __name__ == "__main__":
    sys.exit(main())
