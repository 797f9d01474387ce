"""The framed driver: a simulated microcontroller on a real pseudo-terminal, through the
gateway to MQTT; and its layout's validation, by path."""

from __future__ import annotations

import asyncio
import random
import signal
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from drivers.framed.codec import REASON_CRC, FrameDecoder
from drivers.framed.device import SIM_FIELDS_TOML, FramedSource
from drivers.framed.settings import FramedSettings
from drivers.framed.transport import FramedDriver
from gateway.config import load_config
from gateway.driver_registry import create_driver
from gateway.errors import ConfigError
from gateway.reading import Sample
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.drivers import RecordingSink, running, wait_open
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.sim import PortReader, start_sim, stop

DEVICE = '[[devices]]\nid = "node-1"\ndriver = "framed"\nport = "/dev/ttyACM0"\n'


class ListSink(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.samples: list[Sample] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)

    def counts(self) -> list[int]:
        return [int(s.value) for s in self.samples if s.sensor == "n"]


def sim_settings(tmp_path: Path, link: Path) -> FramedSettings:
    """The settings of the simulated device, as a user would write them."""
    path = tmp_path / "gateway.toml"
    path.write_text(DEVICE.replace("/dev/ttyACM0", str(link)) + "\n" + SIM_FIELDS_TOML)
    (device,) = load_config(path).devices
    assert isinstance(device, FramedSettings)
    return device


async def test_frames_and_bad_crcs_from_a_pty(tmp_path: Path) -> None:
    sink = ListSink()
    sim = PtyDevice("framed", tmp_path / "node", rate=200, garbage_every=10, paused=True)
    async with sim as dev:
        driver = FramedDriver(sim_settings(tmp_path, dev.link), sink)
        async with running(driver):
            await wait_open(driver)
            dev.resume()
            await wait_until(lambda: len(sink.counts()) >= 200, message="200 frames")
            await wait_until(lambda: len(sink.dead) >= 20, message="garbage")
    counts = sink.counts()
    # The frame after each burst of noise is the bad-CRC one: no good frame is lost.
    assert counts == list(range(1, len(counts) + 1))
    assert {s.sensor for s in sink.samples} == {"n", "t", "v", "ok"}
    units = {s.sensor: s.unit for s in sink.samples}
    assert units == {"n": None, "t": "°C", "v": "V", "ok": None}
    assert all(-40 <= float(s.value) <= 85 for s in sink.samples if s.sensor == "t")
    assert REASON_CRC in {d.reason for d in sink.dead}
    assert driver.status.errors == len(sink.dead)


def test_registry_builds_the_driver(tmp_path: Path) -> None:
    driver = create_driver(sim_settings(tmp_path, tmp_path / "node"), ListSink())
    assert isinstance(driver, FramedDriver)
    assert isinstance(driver.codec, FrameDecoder)


def test_layout_problems_are_named_by_path(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        DEVICE
        + 'framing = "cobbs"\ncrc = "crc8"\n'
        + '[[devices.fields]]\nname = "t"\ntype = "int16"\n'
        + '[[devices.fields]]\nname = "h"\ntype = "uint17"\nscale = "x"\n'
        + '[[devices.fields]]\ntype = "float32"\nunits = "V"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    got = sorted(str(p) for p in caught.value.problems)
    assert got == [
        'devices[0].crc: must be one of "crc16-ccitt-false", "crc16-modbus", "crc32" '
        '(got "crc8") (did you mean "crc32"?)',
        "devices[0].fields[1].scale: must be a number, not a string",
        'devices[0].fields[1].type: must be one of "int8", "uint8", "int16", "uint16", '
        '"int32", "uint32", "int64", "uint64", "float32", "float64", "bool" (got "uint17") '
        '(did you mean "uint16"?)',
        "devices[0].fields[2].name: required",
        'devices[0].fields[2].units: unknown key (did you mean "unit"?)',
        'devices[0].framing: must be one of "cobs", "slip" (got "cobbs") (did you mean "cobs"?)',
    ]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("", 'devices[0].fields: required by driver "framed"'),
        (
            "fields = []",
            "devices[0].fields: must hold at least one field ([[devices.fields]] table)",
        ),
        (
            '[[devices.fields]]\nname = "t"\ntype = "int8"\n' * 2,
            "devices[0].fields: names t more than once",
        ),
        (
            'max_frame_bytes = 8\n[[devices.fields]]\nname = "t"\ntype = "float64"\n',
            "devices[0].max_frame_bytes: must be at least 11, the longest a frame of these "
            "fields can be",
        ),
    ],
)
def test_layout_rules_across_keys(tmp_path: Path, extra: str, problem: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(DEVICE + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [problem]


async def test_sim_framed_command(tmp_path: Path) -> None:
    link = tmp_path / "node"
    proc = await start_sim("framed", "--link", str(link), "--rate", "100", "--count", "30")
    assert proc.stderr is not None
    async with asyncio.timeout(10):
        assert f"linked at {link}" in (await proc.stderr.readline()).decode()
    reader = PortReader(link)
    decoder = FrameDecoder("node", FramedSource(random.Random()).codec)
    counts: list[int] = []

    def read() -> int:
        out = decoder.feed(bytes(reader.poll()), 0.0)
        reader.data.clear()
        counts.extend(int(s.value) for s in out.samples if s.sensor == "n")
        return len(counts)

    await wait_until(lambda: read() > 0 and counts[-1] == 30, message="the 30th frame")
    reader.close()
    code, err = await stop(proc, signal.SIGTERM)
    assert code == 0, err
    # The port may have been opened after the first frames were written.
    assert counts == list(range(counts[0], 31))


async def test_frames_to_mqtt_end_to_end(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    gateway_process: GatewayProcess,
) -> None:
    subscriber = subscriber_factory(mosquitto, "edge/+/node-1/telemetry")
    gw = gateway_process
    async with PtyDevice("framed", tmp_path / "node", rate=100, garbage_every=7) as dev:
        fields = tomllib.loads(SIM_FIELDS_TOML)["devices"]["fields"]
        gw.devices = [DeviceSpec("node-1", dev.link, driver="framed", keys={"fields": fields})]
        gw.mqtt_url = mosquitto.url
        gw.start()
        await gw.wait_healthy()

        def counts() -> list[int]:
            return sorted(int(r["value"]) for r in subscriber.readings() if r["sensor"] == "n")

        await wait_until(lambda: len(counts()) >= 100, timeout=30, message="100 frames")

        async def dead_letters_counted() -> bool:
            status = await gw.status()
            return bool(status["store"]["dead_letters"] >= 10)

        await wait_until(dead_letters_counted, timeout=30, message="bad frames counted")
        assert gw.terminate() == 0
    readings = subscriber.readings()
    assert {r["sensor"] for r in readings} == {"n", "t", "v", "ok"}
    got = counts()
    # Consecutive from the first frame read: every good frame arrived once.
    assert got == list(range(got[0], got[0] + len(got)))
    assert {r["unit"] for r in readings if r["sensor"] == "v"} == {"V"}
    assert {type(r["value"]) for r in readings if r["sensor"] == "ok"} == {bool}
