"""Sensor names are bounded per device, and integers beyond 2^53 travel as strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.serial_line.codec import LineDecoder
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.ingest import DeviceSink
from gateway.interfaces import DeviceStatus
from gateway.reading import (
    MAX_SAFE_INTEGER,
    MAX_SENSOR_NAME,
    MAX_SENSORS_PER_DEVICE,
    Sample,
    encode,
)
from gateway.store import admin
from tests.support.store import opened


async def test_bad_and_surplus_sensor_names_become_counted_dead_letters(tmp_path: Path) -> None:
    decoder = LineDecoder("dev-1", "json")
    lines = [
        json.dumps({"t": 21.5, "gps": {"lat": 1.0}}),
        json.dumps({"a b": 1, "x" * (MAX_SENSOR_NAME + 1): 2, "bell\u0007": 3, "ok": 4}),
        # A device inventing a new key on every line.
        *(json.dumps({f"k{n}": n}) for n in range(MAX_SENSORS_PER_DEVICE + 50)),
        json.dumps({"t": 22.0}),
    ]
    async with opened(tmp_path) as store:
        sink = DeviceSink(store, "dev-1")
        sink.status = status = DeviceStatus()
        for n, line in enumerate(lines):
            out = decoder.feed(line.encode() + b"\n", float(n))
            sink.put_samples(out.samples)
            status.readings += len(out.samples)
        await store.flush()
        stored = [json.loads(r.payload) for r in await store.read_after(0, 10_000)]
    names = {r["sensor"] for r in stored}
    # Within the bound every name is kept, known names go on after it is reached.
    assert len(names) == MAX_SENSORS_PER_DEVICE
    assert {"t", "gps.lat", "ok"} <= names
    assert stored[-1]["sensor"] == "t"
    assert stored[-1]["value"] == 22.0
    # Three bad names, and the "k" names beyond the bound, which t, gps.lat and ok share.
    refused = 3 + (MAX_SENSORS_PER_DEVICE + 50) - (MAX_SENSORS_PER_DEVICE - 3)
    assert status.refused_names == refused
    assert status.errors == refused
    assert status.readings == len(stored)
    letters = admin.dead_letters(tmp_path, 1000)
    assert len(letters) == refused
    reasons = {d.reason.partition(":")[0] for d in letters}
    assert reasons == {"bad sensor name", "too many sensor names"}
    assert letters[0].raw == b"a b=1"
    assert all(len(d.raw) <= 256 for d in letters)


def test_integers_a_float64_cannot_hold_go_out_as_strings() -> None:
    def value(v: int) -> object:
        return json.loads(encode(1, Sample("d", "n", v, 1.0)))["value"]

    assert value(MAX_SAFE_INTEGER) == MAX_SAFE_INTEGER
    assert value(-MAX_SAFE_INTEGER) == -MAX_SAFE_INTEGER
    assert value(MAX_SAFE_INTEGER + 1) == str(MAX_SAFE_INTEGER + 1)
    assert value(-(2**64)) == str(-(2**64))
    # What a device sends in a kv or json line keeps every digit.
    decoders = [
        (LineDecoder("d", "kv"), b"big=12345678901234567890\n"),
        (LineDecoder("d", "json"), b'{"big": 12345678901234567890}\n'),
    ]
    for decoder, line in decoders:
        (sample,) = decoder.feed(line, 1.0).samples
        assert value(sample.value) == "12345678901234567890"  # type: ignore[arg-type]


def test_an_integer_too_long_for_int_stays_its_digits() -> None:
    digits = "7" * 5000
    (sample,) = (
        LineDecoder("d", "kv", max_line_bytes=8192).feed(f"n={digits}\n".encode(), 1.0).samples
    )
    assert sample.value == digits


def test_configured_sensor_names_follow_the_same_rule() -> None:
    devices = [
        {"id": "door", "driver": "gpio_input", "pin": 17, "sensor": "door state"},
        {"id": "meter", "driver": "serial_line", "port": "/dev/x", "format": "csv"}
        | {"columns": ["voltage", "temp C"]},
    ]
    with pytest.raises(ConfigError) as failed:
        parse_config({"devices": devices}, None)
    assert [p.path for p in failed.value.problems] == ["devices[0].sensor", "devices[1].columns"]
    assert all("letters, digits" in p.message for p in failed.value.problems)
