"""The nmea driver: a simulated GPS on a real pseudo-terminal, through the gateway to MQTT."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from drivers.nmea.codec import REASON_CHECKSUM, NmeaDecoder
from drivers.nmea.settings import NmeaSettings
from drivers.nmea.transport import NmeaDriver
from gateway.config import load_config
from gateway.driver_registry import create_driver
from gateway.errors import ConfigError
from gateway.reading import Sample
from gateway.retry import Backoff
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.drivers import RecordingSink, running, wait_open
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.sim import PortReader, start_sim, stop

# Where the simulated receiver drives its circle (about 160 m round a point in Munich).
CENTRE = (48.1173, 11.5167)
NEAR = 0.01  # degrees


class ListSink(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.samples: list[Sample] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)

    def values(self, sensor: str) -> list[float]:
        return [float(s.value) for s in self.samples if s.sensor == sensor]


def gps_settings(link: Path, **keys: object) -> NmeaSettings:
    return NmeaSettings(id="gps-1", port=str(link), reconnect_min=0.02, **keys)  # type: ignore[arg-type]


async def test_fixes_and_bad_checksums_from_a_pty(tmp_path: Path) -> None:
    sink = ListSink()
    gps = PtyDevice("gps", tmp_path / "gps", rate=50, garbage_every=4, seed=1, paused=True)
    async with gps as dev:
        driver = NmeaDriver(gps_settings(dev.link), sink)
        async with running(driver):
            # Opened before the first sentence: none is cut in half.
            await wait_open(driver)
            dev.resume()
            await wait_until(lambda: len(sink.values("lat")) >= 40, message="40 positions")
            await wait_until(lambda: len(sink.dead) >= 5, message="bad checksums")
            # Every fix gives the position twice (GGA and RMC), and one utc time.
            assert driver.status.state == "open"
    lats, lons = sink.values("lat"), sink.values("lon")
    assert all(abs(lat - CENTRE[0]) < NEAR for lat in lats)
    assert all(abs(lon - CENTRE[1]) < NEAR for lon in lons)
    assert len(set(lats)) > 10, "the receiver moves"
    utc = sink.values("utc")
    assert utc == sorted(utc)
    assert all(b - a == 1.0 for a, b in itertools.pairwise(utc))
    assert {s.sensor for s in sink.samples} >= {
        "fix_quality",
        "satellites",
        "hdop",
        "altitude",
        "speed",
        "course",
        "fix_mode",
        "satellites_in_view.GP",
    }
    assert {d.reason for d in sink.dead} == {REASON_CHECKSUM}
    assert all(d.raw.startswith(b"$GPGGA,") and d.device == "gps-1" for d in sink.dead)
    assert driver.status.errors == len(sink.dead)


async def test_unplug_and_replug_keeps_reading(tmp_path: Path) -> None:
    sink = ListSink()
    async with PtyDevice("gps", tmp_path / "gps", rate=40) as dev:
        backoff = Backoff(0.02, 0.2, missing_poll=0.02)
        driver = NmeaDriver(gps_settings(dev.link), sink, backoff=backoff)
        async with running(driver):
            await wait_open(driver)
            await wait_until(lambda: len(sink.values("utc")) >= 5, message="first fixes")
            await dev.unplug()
            await wait_until(lambda: driver.status.state != "open", message="unplug noticed")
            before = len(sink.values("utc"))
            dev.replug()
            await wait_until(
                lambda: len(sink.values("utc")) >= before + 5, message="fixes after replug"
            )
            assert driver.status.reconnects == 1


def test_registry_builds_the_driver(tmp_path: Path) -> None:
    driver = create_driver(gps_settings(tmp_path / "gps"), ListSink())
    assert isinstance(driver, NmeaDriver)
    assert isinstance(driver.codec, NmeaDecoder)


def test_config_keys_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[[devices]]\nid = "gps-1"\ndriver = "nmea"\nport = "/dev/ttyACM0"\n'
        'sentences = ["GGA", "RMC"]\nmax_sentence_bytes = "1KiB"\n'
    )
    (device,) = load_config(path).devices
    assert isinstance(device, NmeaSettings)
    assert (device.sentences, device.max_sentence_bytes, device.baudrate) == (
        ("GGA", "RMC"),
        1024,
        9600,
    )
    path.write_text(
        '[[devices]]\nid = "gps-1"\ndriver = "nmea"\nport = "/dev/ttyACM0"\n'
        'sentences = ["GGA", "XYZ"]\nformat = "kv"\nmax_sentence_bytes = 4\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    got = sorted(str(p) for p in caught.value.problems)
    assert len(got) == 3
    assert got[1].startswith("devices[0].max_sentence_bytes: must be at least 16")
    assert got[2].startswith('devices[0].sentences: "XYZ": must each be one of "GGA"')
    assert got[0].startswith("devices[0].format:")


async def test_sim_gps_command_writes_valid_sentences(tmp_path: Path) -> None:
    link = tmp_path / "gps"
    proc = await start_sim("gps", "--link", str(link), "--rate", "20", "--garbage-every", "2")
    assert proc.stderr is not None
    async with asyncio.timeout(10):
        assert f"linked at {link}" in (await proc.stderr.readline()).decode()
    reader = PortReader(link)
    codec = NmeaDecoder("gps")

    def complete_fixes() -> int:
        return reader.poll().count(b"$GPGSA")

    await wait_until(lambda: complete_fixes() >= 6, message="6 fixes")
    data = bytes(reader.data)
    reader.close()
    code, err = await stop(proc, signal.SIGTERM)
    assert code == 0, err
    # The port may have been opened mid-sentence: decode from the first sentence start.
    out = codec.feed(data[data.index(b"$") :], 0.0)
    assert len([s for s in out.samples if s.sensor == "utc"]) >= 5
    assert {d.reason for d in out.dead_letters} <= {REASON_CHECKSUM}
    assert out.dead_letters


async def test_gps_to_mqtt_end_to_end(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    gateway_process: GatewayProcess,
) -> None:
    subscriber = subscriber_factory(mosquitto, "edge/+/gps-1/telemetry")
    gw = gateway_process
    async with PtyDevice("gps", tmp_path / "gps", rate=20, garbage_every=5) as dev:
        gw.devices = [DeviceSpec("gps-1", dev.link, driver="nmea", keys={"sentences": ["GGA"]})]
        gw.mqtt_url = mosquitto.url
        gw.start()
        await gw.wait_healthy()

        def positions() -> list[dict[str, object]]:
            return [r for r in subscriber.readings() if r["sensor"] in ("lat", "lon")]

        await wait_until(lambda: len(positions()) >= 20, timeout=30, message="positions")

        async def dead_letters_counted() -> bool:
            status = await gw.status()
            return bool(
                status["store"]["dead_letters"] >= 2 and status["devices"]["gps-1"]["errors"] >= 2
            )

        await wait_until(dead_letters_counted, timeout=30, message="bad checksums counted")
        assert gw.terminate() == 0
    readings = subscriber.readings()
    assert {r["device"] for r in readings} == {"gps-1"}
    # Only GGA was asked for: no RMC time, no VTG course.
    assert {r["sensor"] for r in readings} == {
        "fix_quality",
        "lat",
        "lon",
        "satellites",
        "hdop",
        "altitude",
        "geoid_separation",
    }
    for reading in positions():
        centre = CENTRE[0] if reading["sensor"] == "lat" else CENTRE[1]
        assert abs(float(reading["value"]) - centre) < NEAR  # type: ignore[arg-type]
        assert reading["unit"] == "°"
