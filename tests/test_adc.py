"""The adc driver: gpiozero's real MCP3xxx classes talking to a simulated chip.

This machine has no SPI bus, so the chip is ``SimulatedMcp3xxx``, built on gpiozero's
``MockSPIDevice``: gpiozero's ``MCP3008`` (or 3208) bit-bangs its command over mock
pins (its software SPI, which it also falls back to on a Pi without spidev) and the
simulated chip clocks back the code of the voltage the test set. What is mocked is
the wire: the pins' levels. gpiozero's software SPI takes its pins from the default
pin factory, so the tests set that to the mock factory too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gpiozero
import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from drivers.adc.device import SimulatedMcp3xxx
from drivers.adc.settings import AdcChannel, AdcSettings
from drivers.adc.transport import AdcDriver
from gateway.app import Gateway
from gateway.config import load_config, parse_config
from gateway.driver_registry import create_driver
from gateway.errors import ConfigError, DriverError
from gateway.reading import Sample
from gateway.retry import Backoff
from gateway.settings import Settings
from gateway.systemd_dropin import render
from tests.support.common import wait_until
from tests.support.drivers import RecordingSink, running, wait_open
from tests.support.mosquitto import Mosquitto, MqttSubscriber

# One step of a 10-bit code at 3.3 V: a reading is within it of the voltage set (the
# chip's code is the nearest step).
LSB10 = 3.3 / 1023


class ListSink(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Sample]] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.batches.append(list(samples))

    def values(self, sensor: str) -> list[Any]:
        return [s.value for batch in self.batches for s in batch if s.sensor == sensor]


@pytest.fixture
def factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockFactory]:
    mock = MockFactory()
    monkeypatch.setattr(gpiozero.Device, "pin_factory", mock)
    yield mock
    mock.reset()


def adc(*channels: AdcChannel, **overrides: Any) -> AdcSettings:
    values: dict[str, Any] = {"id": "tank", "poll_interval": 0.02, "channels": channels}
    values.update(overrides)
    return AdcSettings(**values)


async def test_channels_in_volts_and_scaled(factory: MockFactory) -> None:
    chip, sink = SimulatedMcp3xxx(factory), ListSink()
    chip.volts[0], chip.volts[1], chip.volts[5] = 1.65, 3.0, 0.5
    settings = adc(
        AdcChannel(channel=0, sensor="battery", scale=4.0),
        AdcChannel(channel=1, sensor="pressure", scale=4.0, offset=-2.0, unit="bar"),
        AdcChannel(channel=5, sensor="raw"),
        units={"raw": "volt"},
    )
    assert isinstance(create_driver(settings, sink), AdcDriver)
    driver = AdcDriver(settings, sink, pin_factory=factory)
    async with running(driver):
        await wait_open(driver)
        await wait_until(lambda: len(sink.batches) >= 2, message="two polls")
        chip.volts[5] = 2.25
        await wait_until(
            lambda: sink.values("raw")[-1] == pytest.approx(2.25, abs=LSB10),
            message="the new voltage",
        )
    first = sink.batches[0]
    assert [(s.sensor, s.unit) for s in first] == [
        ("battery", "V"),
        ("pressure", "bar"),
        ("raw", "volt"),
    ]
    assert len({s.ts for s in first}) == 1
    assert first[0].value == pytest.approx(1.65 * 4, abs=4 * LSB10)
    assert first[1].value == pytest.approx(3.0 * 4 - 2, abs=4 * LSB10)
    assert first[2].value == pytest.approx(0.5, abs=LSB10)
    assert driver.status.errors == 0
    assert driver.status.readings == 3 * len(sink.batches)
    # Three channels, a conversion each per poll.
    assert chip.conversions == driver.status.readings


async def test_a_12_bit_chip_on_the_second_chip_select(factory: MockFactory) -> None:
    chip, sink = SimulatedMcp3xxx(factory, "MCP3208", vref=5.0, spi_device=1), ListSink()
    chip.volts[7] = 4.2
    settings = adc(AdcChannel(channel=7, sensor="v"), chip="MCP3208", spi_device=1, vref=5.0)
    driver = AdcDriver(settings, sink, pin_factory=factory)
    async with running(driver):
        await wait_until(lambda: sink.values("v") != [], message="a reading")
    assert sink.values("v")[0] == pytest.approx(4.2, abs=5.0 / 4095)


async def test_busy_spi_pins_are_retried_until_free(factory: MockFactory) -> None:
    SimulatedMcp3xxx(factory).volts[0] = 1.0
    sink = ListSink()
    # Another program holds the bus's chip select as a plain output.
    holder = DigitalOutputDevice(8, pin_factory=factory)
    backoff = Backoff(0.01, 0.05, missing_poll=0.01)
    settings = adc(AdcChannel(channel=0, sensor="v"))
    driver = AdcDriver(settings, sink, pin_factory=factory, backoff=backoff)
    async with running(driver):
        await wait_until(lambda: driver.status.errors >= 2, message="failed opens")
        assert driver.status.state == "waiting"
        assert driver.status.last_error is not None
        assert driver.status.last_error.startswith("cannot open MCP3008 on SPI 0.0: ")
        holder.close()
        await wait_open(driver)
        await wait_until(lambda: sink.values("v") != [], message="a reading")
    # The bus was released at the stop.
    DigitalOutputDevice(8, pin_factory=factory).close()


def test_config_keys_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[[devices]]\nid = "tank"\ndriver = "adc"\nchip = "MCP3204"\nvref = 5\n'
        'poll_interval = "5s"\n'
        '[[devices.channels]]\nchannel = 3\nsensor = "level"\nscale = 2.5\nunit = "m"\n'
    )
    (device,) = load_config(path).devices
    assert isinstance(device, AdcSettings)
    assert (device.chip, device.vref, device.poll_interval, device.spi_bus) == (
        "MCP3204",
        5.0,
        5.0,
        0,
    )
    assert device.channels == (AdcChannel(channel=3, sensor="level", scale=2.5, unit="m"),)
    path.write_text(
        '[[devices]]\nid = "a"\ndriver = "adc"\nchip = "MCP3004"\nspi_device = 2\n'
        'channels = [{ channel = 4, sensor = "x" }, { channel = 1, sensor = "x" }]\n'
        '[[devices]]\nid = "b"\ndriver = "adc"\nvref = 0\nchip = "MCP3009"\n'
        'channels = [{ channel = 8, sensor = "y", scale = "2" }]\n'
        '[[devices]]\nid = "c"\ndriver = "adc"\n'
        '[[devices]]\nid = "d"\ndriver = "adc"\nchannels = []\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [
        "devices[0].channels[0].channel: MCP3004 has channels 0 to 3",
        "devices[0].channels: names sensor x more than once",
        "devices[0].spi_device: must be 0 or 1 on SPI bus 0 (it has two chip selects)",
        "devices[1].vref: must be a voltage above 0 (got 0)",
        'devices[1].chip: must be one of "MCP3001", "MCP3002", "MCP3004", "MCP3008", '
        '"MCP3201", "MCP3202", "MCP3204", "MCP3208", "MCP3301", "MCP3302", "MCP3304" '
        '(got "MCP3009") (did you mean "MCP3008"?)',
        "devices[1].channels[0].channel: must be from 0 to 7 (got 8)",
        "devices[1].channels[0].scale: must be a number, not a string",
        'devices[2].channels: required by driver "adc"',
        "devices[3].channels: must hold at least one channel ([[devices.channels]] table)",
    ]


def test_the_service_may_open_spi_and_gpio(tmp_path: Path) -> None:
    settings = Settings(devices=(adc(AdcChannel(channel=0, sensor="v")),))
    text = render(settings, tmp_path / "gateway.toml")
    assert "DeviceAllow=char-spi rw" in text
    assert "DeviceAllow=char-gpiochip rw" in text
    assert "SupplementaryGroups=gpio spi" in text


async def test_an_adc_in_a_running_gateway_to_mqtt(
    tmp_path: Path,
    factory: MockFactory,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
) -> None:
    """The whole gateway in this process (the mock pins live here), to a real mosquitto."""
    chip = SimulatedMcp3xxx(factory)
    chip.volts[2] = 1.2
    subscriber = subscriber_factory(mosquitto, "edge/+/tank/telemetry")
    device = {
        "id": "tank",
        "driver": "adc",
        "poll_interval": "50ms",
        "channels": [{"channel": 2, "sensor": "level", "scale": 10.0, "unit": "cm"}],
    }
    settings = parse_config(
        {
            "gateway": {"id": "gw-adc", "data_dir": str(tmp_path / "data")},
            "devices": [device],
            "uplink": {"mqtt": {"url": mosquitto.url, "reconnect_min": 0.05}},
        },
        None,
    )
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run())
    try:
        await wait_until(lambda: len(subscriber.readings()) >= 3, timeout=30, message="readings")
        gateway.request_stop()
        assert await asyncio.wait_for(task, timeout=30) == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    readings = subscriber.readings()
    assert {(r["device"], r["sensor"], r["unit"]) for r in readings} == {("tank", "level", "cm")}
    for reading in readings:
        assert reading["value"] == pytest.approx(12.0, abs=10 * LSB10)


async def test_read_now_converts_every_channel_between_polls(factory: MockFactory) -> None:
    chip, sink = SimulatedMcp3xxx(factory), ListSink()
    chip.volts[0], chip.volts[1] = 1.0, 2.0
    settings = adc(
        AdcChannel(channel=0, sensor="battery", scale=4.0),
        AdcChannel(channel=1, sensor="raw"),
        poll_interval=3600.0,
    )
    driver = AdcDriver(settings, sink, pin_factory=factory)
    with pytest.raises(DriverError, match=r"tank: MCP3008 on SPI 0.0 not open \(state starting\)"):
        await driver.read_now()
    async with running(driver):
        await wait_until(lambda: len(sink.batches) == 1, message="the first poll")
        chip.volts[1] = 3.0
        values = await driver.read_now()
    assert values == {
        "battery": pytest.approx(4.0, abs=4 * LSB10),
        "raw": pytest.approx(3.0, abs=LSB10),
    }
    # Stored as a poll's readings, and no poll came between.
    assert len(sink.batches) == 2
    assert sink.values("raw")[-1] == values["raw"]
    assert chip.conversions == 4
