"""The onewire driver: its codec, and the driver reading a real folder written like sysfs.

There is no 1-Wire bus here; the kernel's side is a folder that ``W1Tree`` writes the
way the w1 drivers publish probes (with real scratchpad bytes and CRCs), and the
driver reads it through the same file calls it makes on ``/sys/bus/w1/devices``.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.onewire.codec import (
    REASON_CRC,
    REASON_UNPARSED,
    REASON_ZEROS,
    Refused,
    crc8,
    decode,
    encode_temperature,
    encode_w1_slave,
)
from drivers.onewire.device import W1Tree
from drivers.onewire.settings import OneWireSettings
from drivers.onewire.transport import REASON_NO_FILE, OneWireDriver
from gateway.config import load_config
from gateway.driver_registry import create_driver
from gateway.errors import ConfigError, DriverError
from gateway.reading import Sample
from tests.support.common import wait_until
from tests.support.drivers import RecordingSink, running, wait_open
from tests.support.gateway_proc import DeviceSpec, GatewayProcess
from tests.support.mosquitto import Mosquitto, MqttSubscriber

BOILER = "28-0316a2799bff"
RETURN = "28-0416b3a1c2ff"
OLD = "10-000802b4a3c1"

# The codec ---------------------------------------------------------------------


def test_a_real_w1_slave_file() -> None:
    text = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
    assert decode("w1_slave", text) == 23.125
    assert crc8(bytes.fromhex("72014b467fff0e10")) == 0x57


def test_refused_files() -> None:
    assert decode("w1_slave", encode_w1_slave(20.0, crc_ok=False)) == Refused(REASON_CRC)
    zeros = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"
    assert decode("w1_slave", zeros) == Refused(REASON_ZEROS)
    for text in ("", "crc=YES", encode_w1_slave(20.0).splitlines()[0]):
        assert decode("w1_slave", text) == Refused(REASON_UNPARSED)
    for text in ("", "21.5", "abc", "1 2"):
        assert decode("temperature", text) == Refused(REASON_UNPARSED)


@given(sixteenths=st.integers(-55 * 16, 125 * 16))
def test_every_ds18b20_value_round_trips(sixteenths: int) -> None:
    celsius = sixteenths / 16
    # The kernel prints whole millidegrees, truncated toward zero.
    expected = int(sixteenths * 1000 / 16) / 1000
    assert decode("w1_slave", encode_w1_slave(celsius)) == expected
    assert decode("temperature", encode_temperature(celsius)) == expected
    assert decode("w1_slave", encode_w1_slave(celsius, crc_ok=False)) == Refused(REASON_CRC)


@given(text=st.text(max_size=200), name=st.sampled_from(["temperature", "w1_slave"]))
def test_any_text_is_a_value_or_refused(text: str, name: str) -> None:
    assert isinstance(decode(name, text), float | Refused)


# Settings ------------------------------------------------------------------------


def test_config_keys_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[[devices]]\nid = "probes"\ndriver = "onewire"\npoll_interval = "30s"\n'
        f'names = {{ "{BOILER}" = "flow" }}\n'
    )
    (device,) = load_config(path).devices
    assert isinstance(device, OneWireSettings)
    assert (device.base_path, device.poll_interval, device.names) == (
        "/sys/bus/w1/devices",
        30.0,
        {BOILER: "flow"},
    )
    path.write_text(
        '[[devices]]\nid = "probes"\ndriver = "onewire"\npoll_interval = 0\nport = "/dev/x"\n'
        f'names = {{ "{BOILER}" = "flow", "{RETURN}" = "flow" }}\n'
        '[[devices]]\nid = "more"\ndriver = "onewire"\nnames = { "28-XYZ" = "a" }\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    got = [str(p) for p in caught.value.problems]
    assert got == [
        "devices[0].poll_interval: must be longer than 0 seconds",
        'devices[0].names: gives the name "flow" to more than one probe',
        'devices[0].port: not used by driver "onewire"',
        'devices[1].names: "28-XYZ" is not a 1-Wire temperature probe id: family 10, 22, '
        '28, 3b, 42, then "-" and 12 lower-case hex digits ("28-0316a2799bff")',
    ]


# The driver on a folder ------------------------------------------------------------


class ListSink(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.samples: list[Sample] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)

    def values(self, sensor: str) -> list[Any]:
        return [s.value for s in self.samples if s.sensor == sensor]


def probes(tree: W1Tree, **overrides: Any) -> OneWireSettings:
    values: dict[str, Any] = {"id": "probes", "base_path": str(tree.folder), "poll_interval": 0.02}
    values.update(overrides)
    return OneWireSettings(**values)


async def test_each_probe_is_a_sensor_named_or_by_id(tmp_path: Path) -> None:
    tree, sink = W1Tree(tmp_path / "w1"), ListSink()
    tree.plug(BOILER, 61.5)
    tree.plug(OLD, -3.25, style="w1_slave")
    settings = probes(tree, names={BOILER: "flow"}, units={OLD: "degC"})
    driver = create_driver(settings, sink)
    assert isinstance(driver, OneWireDriver)
    async with running(driver):
        await wait_until(lambda: len(sink.values(OLD)) >= 2, message="two polls")
        tree.set(BOILER, 62.0)
        await wait_until(lambda: 62.0 in sink.values("flow"), message="the new value")
    assert set(sink.values("flow")) == {61.5, 62.0}
    assert set(sink.values(OLD)) == {-3.25}
    assert {(s.sensor, s.unit, s.device) for s in sink.samples} == {
        ("flow", "°C", "probes"),
        (OLD, "degC", "probes"),
    }
    assert sink.dead == []
    assert driver.status.errors == 0
    assert driver.status.readings == len(sink.samples)


async def test_probes_appear_and_disappear(tmp_path: Path) -> None:
    tree, sink = W1Tree(tmp_path / "w1"), ListSink()
    tree.plug(BOILER, 20.0)
    driver = OneWireDriver(probes(tree), sink)
    async with running(driver):
        await wait_until(lambda: driver.present == {BOILER}, message="one probe")
        tree.plug(RETURN, 30.0)
        await wait_until(lambda: sink.values(RETURN) != [], message="the new probe")
        tree.unplug(BOILER)
        await wait_until(lambda: driver.present == {RETURN}, message="the probe gone")
        assert driver.status.errors == 1
        assert driver.status.last_error == f"probe {BOILER} disappeared"
        count = len(sink.values(BOILER))
        await wait_until(lambda: len(sink.values(RETURN)) >= 3, message="polls go on")
        assert len(sink.values(BOILER)) == count
    assert driver.status.state == "stopped"


async def test_bad_crc_unreadable_and_garbage_are_dead_letters(tmp_path: Path) -> None:
    tree, sink = W1Tree(tmp_path / "w1"), ListSink()
    tree.plug(BOILER, 20.0, style="w1_slave")
    tree.set(BOILER, 20.0, style="w1_slave", crc_ok=False)
    tree.plug(RETURN, 30.0)
    tree.write(RETURN, "temperature", "\x00\xff")
    # A probe whose folder holds no value file (w1_therm not loaded).
    (tree.folder / OLD).mkdir()
    # A file that cannot be read: a folder where the file should be (EISDIR).
    unreadable = "22-000000000001"
    (tree.folder / unreadable / "temperature").mkdir(parents=True)
    driver = OneWireDriver(probes(tree), sink)
    async with running(driver):
        await wait_until(lambda: len(sink.dead) >= 8, message="two polls of dead letters")
    assert sink.samples == []
    reasons = {d.reason for d in sink.dead}
    assert reasons == {
        f"{BOILER}/w1_slave: {REASON_CRC}",
        f"{RETURN}/temperature: {REASON_UNPARSED}",
        f"{OLD}: {REASON_NO_FILE}",
        f"{unreadable}/temperature: cannot read temperature: Is a directory",
    }
    crc = next(d for d in sink.dead if d.reason.startswith(BOILER))
    assert crc.raw == encode_w1_slave(20.0, crc_ok=False).encode()
    assert next(d for d in sink.dead if d.reason.startswith(RETURN)).raw == "\x00\xff".encode()
    assert driver.status.errors == len(sink.dead)


async def test_a_missing_tree_waits_until_it_appears(tmp_path: Path) -> None:
    sink = ListSink()
    folder = tmp_path / "w1"
    settings = OneWireSettings(id="probes", base_path=str(folder), poll_interval=0.02)
    driver = OneWireDriver(settings, sink)
    async with running(driver):
        await wait_until(lambda: driver.status.errors >= 2, message="failed listings")
        assert driver.status.state == "waiting"
        assert driver.status.last_error is not None
        assert "w1-gpio overlay" in driver.status.last_error
        W1Tree(folder).plug(BOILER, 5.0)
        await wait_open(driver)
        await wait_until(lambda: sink.values(BOILER) != [], message="a reading")


async def test_reads_run_off_the_event_loop(tmp_path: Path) -> None:
    """A read that blocks, as the kernel's does while a probe converts, leaves the loop free.

    The probe's file is a named pipe: reading it blocks until the test writes the value.
    A writer can open it without waiting only while a reader has it open, which tells
    the test, running on the loop, that the driver's read is blocked in its thread.
    """
    tree, sink = W1Tree(tmp_path / "w1"), ListSink()
    (tree.folder / BOILER).mkdir()
    pipe = tree.folder / BOILER / "temperature"
    os.mkfifo(pipe)
    writers: list[int] = []

    def reader_waiting() -> bool:
        try:
            writers.append(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            # ENXIO: no reader has the pipe open yet.
            if exc.errno != errno.ENXIO:
                raise
            return False
        return True

    # One poll only: a second would block on the pipe again.
    driver = OneWireDriver(probes(tree, poll_interval=3600.0), sink)
    async with running(driver):
        await wait_until(reader_waiting, message="the read blocked in its thread")
        assert (driver.status.state, sink.samples) == ("starting", [])
        os.write(writers[0], b"20500\n")
        os.close(writers[0])
        await wait_until(lambda: sink.values(BOILER) == [20.5], message="the read done")


# Through the gateway to MQTT -------------------------------------------------------


async def test_probes_to_mqtt_end_to_end(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    gateway_process: GatewayProcess,
) -> None:
    tree = W1Tree(tmp_path / "w1")
    tree.plug(BOILER, 61.5)
    tree.plug(OLD, 18.0, style="w1_slave")
    subscriber = subscriber_factory(mosquitto, "edge/+/probes/telemetry")
    gw = gateway_process
    keys: dict[str, object] = {
        "base_path": str(tree.folder),
        "poll_interval": "50ms",
        "names": {BOILER: "flow"},
    }
    gw.devices = [DeviceSpec("probes", None, driver="onewire", keys=keys)]
    gw.mqtt_url = mosquitto.url
    gw.start()
    await gw.wait_healthy()

    def values(sensor: str) -> list[object]:
        return [r["value"] for r in subscriber.readings() if r["sensor"] == sensor]

    await wait_until(lambda: bool(values("flow") and values(OLD)), timeout=30, message="readings")
    tree.set(OLD, 18.0, style="w1_slave", crc_ok=False)

    async def dead_letter_counted() -> bool:
        status = await gw.status()
        return bool(status["store"]["dead_letters"] >= 1)

    await wait_until(dead_letter_counted, timeout=30, message="the bad crc kept")
    tree.set(OLD, 19.0, style="w1_slave")
    tree.unplug(BOILER)

    async def gone_reported() -> bool:
        device = (await gw.status())["devices"]["probes"]
        return bool(
            device["state"] == "open" and device["last_error"] == f"probe {BOILER} disappeared"
        )

    await wait_until(gone_reported, timeout=30, message="the unplugged probe reported")
    await wait_until(lambda: 19.0 in values(OLD), timeout=30, message="the good crc again")
    assert gw.terminate() == 0
    readings = subscriber.readings()
    assert {r["sensor"] for r in readings} == {"flow", OLD}
    assert set(values("flow")) == {61.5}
    assert set(values(OLD)) == {18.0, 19.0}
    assert {r["unit"] for r in readings} == {"°C"}


async def test_read_now_reads_every_probe_between_polls(tmp_path: Path) -> None:
    tree, sink = W1Tree(tmp_path / "w1"), ListSink()
    tree.plug(BOILER, 61.5)
    tree.plug(OLD, -3.25, style="w1_slave")
    driver = OneWireDriver(probes(tree, names={BOILER: "flow"}, poll_interval=3600.0), sink)
    async with running(driver):
        await wait_until(lambda: len(sink.samples) == 2, message="the first poll")
        tree.set(BOILER, 62.0)
        assert await driver.read_now() == {"flow": 62.0, OLD: -3.25}
        # Stored as a poll's readings, and no poll came between.
        assert sink.values("flow") == [61.5, 62.0]
        # The bus master gone: the tree cannot be listed.
        shutil.rmtree(tree.folder)
        with pytest.raises(DriverError, match=r"probes: cannot list .*w1-gpio overlay"):
            await driver.read_now()
