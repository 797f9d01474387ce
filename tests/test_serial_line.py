"""The serial_line driver against simulated devices on real pseudo-terminals."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import serial

from drivers.serial_line.codec import REASON_NUL, REASON_TOO_LONG, REASON_UTF8, Decoded, LineDecoder
from drivers.serial_line.settings import SerialLineSettings
from drivers.serial_line.transport import SerialLineDriver
from gateway.driver_registry import create_driver, drivers
from gateway.errors import DriverError
from gateway.reading import Sample
from gateway.retry import Backoff
from gateway.settings import DeviceSettings
from simulators import PtyDevice
from tests.support.common import wait_for_value, wait_until
from tests.support.drivers import RecordingSink, running, wait_open


def fast() -> Backoff:
    """Short waits, so reconnect tests take milliseconds."""
    return Backoff(0.02, 0.2, missing_poll=0.02)


class ListSink(RecordingSink):
    """Keeps every sample, and the size of every put_samples call."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[Sample] = []
        self.batches: list[int] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)
        self.batches.append(len(samples))

    def counts(self) -> list[int]:
        """The counter device's ``n`` values, in the order received."""
        return [int(s.value) for s in self.samples if s.sensor == "n"]


class WatchedDecoder(LineDecoder):
    """The real decoder, noting the largest buffer it ever held between feeds."""

    max_buffered = 0

    def feed(self, data: bytes, ts: float) -> Decoded:
        out = super().feed(data, ts)
        self.max_buffered = max(self.max_buffered, self.buffered)
        return out


def device(link: Path, **overrides: Any) -> SerialLineSettings:
    return SerialLineSettings(id="counter-1", port=str(link), **overrides)


def is_open(driver: SerialLineDriver) -> bool:
    return driver.status.state == "open"


async def test_every_line_arrives_once_in_order(tmp_path: Path) -> None:
    link = tmp_path / "dev" / "counter"
    sink = ListSink()
    settings = device(link, units={"n": "count"})
    async with PtyDevice("counter", link, rate=20_000, count=5000, paused=True) as dev:
        driver = SerialLineDriver(settings, sink, backoff=fast())
        async with running(driver):
            await wait_open(driver)
            dev.resume()
            await wait_until(lambda: driver.status.readings == 5000, message="5000 readings")
            assert sink.counts() == list(range(1, 5001))
            assert sink.dead == []
            assert len(sink.batches) < 5000  # one call per chunk read, not per line
            assert {(s.device, s.unit) for s in sink.samples} == {("counter-1", "count")}
            assert driver.status.last_reading_ts == sink.samples[-1].ts
            assert (driver.status.errors, driver.status.reconnects) == (0, 0)
            assert driver.opened_path == dev.slave_path


async def test_lines_that_trickle_in_are_read_a_chunk_per_read_interval(tmp_path: Path) -> None:
    link = tmp_path / "counter"
    sink = ListSink()
    sink.paced = True
    async with PtyDevice("counter", link, paused=True) as dev:
        driver = SerialLineDriver(device(link, read_interval=1.0), sink, backoff=fast())
        async with running(driver):
            await wait_open(driver)
            # After a quiet spell a line is read at once ...
            dev.inject(b"n=1\n")
            await wait_until(lambda: sink.counts() == [1], message="the first line")
            # ... and the lines that follow within the interval wait for one read,
            # however the device spaced them.
            for n in range(2, 6):
                dev.inject(b"n=%d\n" % n)
                await asyncio.sleep(0.01)
            await wait_until(lambda: len(sink.samples) == 5, message="the next four")
    assert sink.counts() == [1, 2, 3, 4, 5]
    assert sink.batches == [1, 4]


async def test_an_unpaced_sink_gets_each_line_as_it_comes(tmp_path: Path) -> None:
    link = tmp_path / "counter"
    sink = ListSink()  # not paced: someone watches the live stream
    async with PtyDevice("counter", link, paused=True) as dev:
        # An interval this long would hold the second line for a minute if it applied.
        driver = SerialLineDriver(device(link, read_interval=60.0), sink, backoff=fast())
        async with running(driver):
            await wait_open(driver)
            for n in range(1, 4):
                dev.inject(b"n=%d\n" % n)
                await wait_for_value(lambda: len(sink.samples), n, "lines")
    assert sink.batches == [1, 1, 1]


async def test_unplug_and_replug(tmp_path: Path) -> None:
    link = tmp_path / "counter"
    sink = ListSink()
    async with PtyDevice("counter", link, rate=2000) as dev:
        driver = SerialLineDriver(device(link), sink, backoff=fast())
        async with running(driver):
            await wait_until(lambda: driver.status.readings >= 200, message="first readings")
            await dev.unplug()
            await wait_until(
                lambda: str(driver.status.last_error).startswith("port missing"),
                message="the driver to look for the port again",
            )
            assert driver.status.state == "waiting"
            assert not link.exists()
            before = driver.status.readings
            dev.replug()
            await wait_open(driver)
            assert driver.status.reconnects == 1
            await wait_until(lambda: driver.status.readings >= before + 200, message="more")
    values = sink.counts()
    # Lines due while unplugged never reach anyone; nothing is read twice or out of order.
    assert all(a < b for a, b in itertools.pairwise(values))
    assert dev.lines_lost > 0
    assert values[-1] - values[0] + 1 > len(values)


async def test_port_missing_at_start_then_appearing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = tmp_path / "by-id" / "usb-sensor"
    sink = ListSink()
    driver = SerialLineDriver(device(link), sink, backoff=fast())
    caplog.set_level(logging.INFO, logger="drivers.serial_line")
    async with running(driver):
        await wait_until(lambda: driver.status.errors >= 10, message="several failed opens")
        assert driver.status.state == "waiting"
        missing = [r for r in caplog.records if "port missing" in r.getMessage()]
        assert len(missing) == 1  # logged once, then counted
        async with PtyDevice("counter", link, rate=500):
            await wait_until(lambda: driver.status.readings >= 10, message="readings")
            assert driver.status.reconnects == 0  # it had never been open
        assert any("repeated" in r.getMessage() for r in caplog.records)


async def test_link_follows_a_new_device(tmp_path: Path) -> None:
    link = tmp_path / "counter"
    sink = ListSink()
    driver = SerialLineDriver(device(link), sink, backoff=fast())
    async with running(driver):
        async with PtyDevice("counter", link, rate=500) as first:
            await wait_until(lambda: driver.status.readings >= 5, message="first device")
            assert driver.opened_path == first.slave_path
        await wait_until(lambda: driver.status.state == "waiting", message="waiting")
        async with PtyDevice("counter", link, rate=500, start=1_000_000) as second:
            # Lines written before the driver opened the port are flushed by the open.
            await wait_until(
                lambda: any(v >= 1_000_000 for v in sink.counts()), message="second device"
            )
            assert driver.opened_path == second.slave_path
            assert driver.status.reconnects == 1


async def test_hostile_input_keeps_the_driver_up(tmp_path: Path) -> None:
    link = tmp_path / "counter"
    sink = ListSink()
    settings = device(link, max_line_bytes=256)
    driver = SerialLineDriver(settings, sink, backoff=fast())
    watched = WatchedDecoder.from_settings(settings)
    driver.codec = watched
    noise = bytes(range(256)).replace(b"\n", b"").replace(b"\r", b"")
    async with (
        PtyDevice(
            "counter", link, rate=3000, count=3000, garbage_every=100, paused=True, seed=3
        ) as dev,
        running(driver),
    ):
        await wait_open(driver)
        dev.resume()
        await wait_until(lambda: driver.status.readings >= 100, message="first readings")
        dev.inject(b"\x00\x00\x00\n")
        dev.inject(b"n=\xff\xfe\xfd\n")
        dev.inject(noise * (1024 * 1024 // len(noise)))  # a megabyte without a newline
        dev.inject(b"\n")
        await wait_until(
            lambda: driver.status.readings == 3000 and len(sink.dead) == 33,
            timeout=30,
            message="every valid line and every dead letter",
        )
        assert is_open(driver)
        assert driver.status.reconnects == 0
    assert sink.counts() == list(range(1, 3001))
    reasons = [d.reason for d in sink.dead]
    assert reasons.count(REASON_TOO_LONG) == 1
    assert reasons.count(REASON_UTF8) == 1
    assert reasons.count(REASON_NUL) == 31  # the device's 30 garbage lines and ours
    assert driver.status.errors == 33
    assert watched.max_buffered <= 256
    assert all(len(d.raw) <= 256 for d in sink.dead)


async def test_json_lines_with_crlf_through_a_pty(tmp_path: Path) -> None:
    link = tmp_path / "json"
    sink = ListSink()
    settings = device(link, format="json", units={"t": "°C"})
    async with PtyDevice("counter", link, paused=True) as dev:
        driver = SerialLineDriver(settings, sink, backoff=fast())
        async with running(driver):
            await wait_open(driver)
            dev.inject(b'{"t": 21.5, "gps": {"lat": 48.1}, "ok": true}\r\n[1]\r\n')
            await wait_until(lambda: len(sink.samples) == 3 and len(sink.dead) == 1)
    assert [(s.sensor, s.value, s.unit) for s in sink.samples] == [
        ("t", 21.5, "°C"),
        ("gps.lat", 48.1, None),
        ("ok", True, None),
    ]
    assert sink.dead[0].raw == b"[1]"


async def test_not_a_tty_is_retried_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "regular-file"
    path.write_bytes(b"n=1\n")
    driver = SerialLineDriver(device(path), ListSink(), backoff=fast())
    async with running(driver):
        await wait_until(lambda: driver.status.errors >= 3, message="failed opens")
        assert driver.status.state == "waiting"
        assert driver.status.last_error is not None
        assert driver.status.last_error.startswith("open failed")


async def test_cancel_closes_the_port(tmp_path: Path) -> None:
    link = tmp_path / "counter"
    async with PtyDevice("counter", link, rate=100) as dev:
        driver = SerialLineDriver(device(link), ListSink(), backoff=fast())
        async with running(driver):
            await wait_open(driver)
            # The driver holds an exclusive lock on the port while it is open.
            with pytest.raises(serial.SerialException, match="exclusively lock"):
                serial.Serial(dev.slave_path, exclusive=True)
        assert driver.status.state == "stopped"
        serial.Serial(dev.slave_path, exclusive=True).close()


def test_registry_and_unknown_driver(tmp_path: Path) -> None:
    sink = ListSink()
    assert drivers()["serial_line"].create is SerialLineDriver
    driver = create_driver(device(tmp_path / "x"), sink)
    assert isinstance(driver, SerialLineDriver)
    assert driver.device_id == "counter-1"
    assert driver.status.state == "starting"
    with pytest.raises(DriverError, match="unknown driver 'modbus_tcp'") as info:
        create_driver(DeviceSettings(id="m1", driver="modbus_tcp"), sink)
    assert info.value.device == "m1"
    with pytest.raises(DriverError, match="needs SerialLineSettings, not DeviceSettings"):
        create_driver(DeviceSettings(id="s1", driver="serial_line"), sink)
