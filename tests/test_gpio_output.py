"""The gpio_output driver on gpiozero's mock pins, alone and inside a running gateway.

This machine has no GPIO, so pins are gpiozero's ``MockFactory`` pins: gpiozero's real
``DigitalOutputDevice`` and ``PWMOutputDevice``, reservations and value handling; only
the electrical pin is simulated, and its level (``pin.state``) and history
(``pin.states``) are what the tests read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gpiozero
import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

from drivers.gpio_output.settings import GpioOutputSettings
from drivers.gpio_output.transport import GpioOutputDriver
from gateway.app import Gateway
from gateway.config import load_config, parse_config
from gateway.config_warnings import config_warnings
from gateway.driver_registry import create_driver
from gateway.errors import ConfigError, DriverError
from gateway.reading import Sample
from gateway.retry import Backoff
from tests.support.common import wait_until
from tests.support.drivers import RecordingSink, running, wait_open
from tests.support.mosquitto import Mosquitto, MqttSubscriber


class ListSink(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.samples: list[Sample] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)

    def values(self) -> list[Any]:
        return [s.value for s in self.samples]


def output(**overrides: Any) -> GpioOutputSettings:
    values: dict[str, Any] = {"id": "pump", "pin": 23}
    values.update(overrides)
    return GpioOutputSettings(**values)


def pin_of(factory: MockFactory, name: str = "GPIO23") -> MockPin:
    pin: MockPin = factory.pin(name)
    return pin


async def test_state_at_open_and_after_each_write() -> None:
    factory, sink = MockFactory(), ListSink()
    assert isinstance(create_driver(output(), sink), GpioOutputDriver)
    driver = GpioOutputDriver(output(units={"state": "on"}), sink, pin_factory=factory)
    async with running(driver):
        await wait_open(driver)
        pin = pin_of(factory)
        assert (pin.function, pin.state, sink.values()) == ("output", False, [0])
        assert await driver.write("state", 1) == 1
        assert pin.state is True
        assert await driver.write("state", False) == 0
        assert pin.state is False
        assert await driver.write("state", True) == 1
    assert sink.values() == [0, 1, 0, 1]
    assert {(s.device, s.sensor, s.unit) for s in sink.samples} == {("pump", "state", "on")}
    assert driver.status.readings == 4
    # Stopped: back to the safe level (off), then released as an input.
    assert [s.state for s in pin.states] == [False, True, False, True, False]
    assert pin.function == "input"


async def test_active_low_with_an_initial_on() -> None:
    factory, sink = MockFactory(), ListSink()
    driver = GpioOutputDriver(
        output(active_high=False, initial=1, sensor="relay"), sink, pin_factory=factory
    )
    async with running(driver):
        await wait_open(driver)
        pin = pin_of(factory)
        # On, for an active-low relay board, is a low pin.
        assert (pin.state, sink.values()) == (False, [1])
        assert await driver.write("relay", 0) == 0
        assert pin.state is True
    # The safe level of this output is on (initial = 1): the pin went low before release.
    assert [s.state for s in pin.states] == [False, True, False]


async def test_pwm_duty_cycle() -> None:
    factory, sink = MockFactory(pin_class=MockPWMPin), ListSink()
    driver = GpioOutputDriver(
        output(pwm=True, initial=0.3, frequency=200.0, sensor="duty"), sink, pin_factory=factory
    )
    async with running(driver):
        await wait_open(driver)
        pin = pin_of(factory)
        assert pin.frequency == 200
        assert pin.state == pytest.approx(0.3)
        assert await driver.write("duty", 0.75) == pytest.approx(0.75)
        assert pin.state == pytest.approx(0.75)
        assert await driver.write("duty", 1) == 1.0
    assert sink.values() == pytest.approx([0.3, 0.75, 1.0])
    assert all(isinstance(v, float) for v in sink.values())
    assert pin.frequency is None


async def test_bad_writes_change_nothing() -> None:
    factory, sink = MockFactory(), ListSink()
    driver = GpioOutputDriver(output(), sink, pin_factory=factory)
    with pytest.raises(DriverError, match=r"pump: output not open \(state starting\)"):
        await driver.write("state", 1)
    async with running(driver):
        await wait_open(driver)
        for sensor, value, message in [
            ("valve", 1, "pump: has no output 'valve' (it has 'state')"),
            ("state", 0.5, "pump: state: must be 0 or 1 (not a pwm output)"),
            ("state", 2, "pump: state: must be a number from 0 to 1, or true or false (got 2)"),
            ("state", "on", "must be a number from 0 to 1, or true or false, not a string"),
            ("state", float("nan"), "not a float"),
        ]:
            with pytest.raises(DriverError) as caught:
                await driver.write(sensor, value)
            assert message in str(caught.value)
        assert pin_of(factory).state is False
    assert sink.values() == [0]


async def test_a_busy_pin_is_retried_until_free() -> None:
    factory, sink = MockFactory(), ListSink()
    holder = DigitalOutputDevice(23, pin_factory=factory)
    backoff = Backoff(0.01, 0.05, missing_poll=0.01)
    driver = GpioOutputDriver(output(), sink, pin_factory=factory, backoff=backoff)
    async with running(driver):
        await wait_until(lambda: driver.status.errors >= 2, message="failed opens")
        assert driver.status.state == "waiting"
        assert driver.status.last_error is not None
        assert "already in use" in driver.status.last_error
        holder.close()
        await wait_open(driver)
        assert await driver.write("state", 1) == 1
    # Released at the stop: the pin can be claimed again.
    DigitalOutputDevice(23, pin_factory=factory).close()


def test_config_keys_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[[devices]]\nid = "fan"\ndriver = "gpio_output"\npin = "GPIO18"\npwm = true\n'
        "frequency = 250\ninitial = 0.5\n"
    )
    (device,) = load_config(path).devices
    assert isinstance(device, GpioOutputSettings)
    assert (device.pwm, device.frequency, device.initial, device.active_high) == (
        True,
        250.0,
        0.5,
        True,
    )
    path.write_text('[[devices]]\nid = "a"\ndriver = "gpio_output"\npin = 23\nfrequency = 50\n')
    assert config_warnings(load_config(path)) == [
        "devices[0].frequency: is used only with pwm = true"
    ]
    path.write_text(
        '[[devices]]\nid = "a"\ndriver = "gpio_output"\npin = 23\ninitial = 0.5\n'
        "frequency = 50\n"
        '[[devices]]\nid = "b"\ndriver = "gpio_output"\npin = 99\ninitial = 2\n'
        "frequency = 0\npwm = true\nbounce = 1\n"
        '[[devices]]\nid = "c"\ndriver = "gpio_output"\ninitial = true\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [
        "devices[0].initial: must be 0 or 1 (or false or true) without pwm = true",
        "devices[1].pin: must be a BCM number from 0 to 53 (got 99)",
        "devices[1].initial: must be a number from 0 to 1, or true or false (got 2)",
        "devices[1].frequency: must be a number of hertz above 0 (got 0)",
        'devices[1].bounce: not used by driver "gpio_output"',
        'devices[2].pin: required by driver "gpio_output"',
    ]


async def test_an_output_in_a_running_gateway_to_mqtt(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., MqttSubscriber],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole gateway in this process (the mock pins live here): its driver, store
    and MQTT uplink to a real mosquitto; ``write`` is called on the gateway's driver as
    the command router will call it."""
    factory = MockFactory()
    # gpiozero's default factory, which a driver built by the gateway (pin_factory=None)
    # uses: what GPIOZERO_PIN_FACTORY=mock selects for a whole gateway process.
    monkeypatch.setattr(gpiozero.Device, "pin_factory", factory)
    subscriber = subscriber_factory(mosquitto, "edge/+/pump/telemetry")
    settings = parse_config(
        {
            "gateway": {"id": "gw-out", "data_dir": str(tmp_path / "data")},
            "devices": [{"id": "pump", "driver": "gpio_output", "pin": 23}],
            "uplink": {"mqtt": {"url": mosquitto.url, "reconnect_min": 0.05}},
        },
        None,
    )
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run())
    try:
        await wait_until(lambda: "pump" in gateway.drivers, message="the driver started")
        driver = gateway.drivers["pump"]
        assert isinstance(driver, GpioOutputDriver)
        await wait_open(driver)
        assert await driver.write("state", 1) == 1
        assert pin_of(factory).state is True
        # At least once: a reading sent again carries the same seq.
        await wait_until(
            lambda: {r["seq"]: r["value"] for r in subscriber.readings()} == {1: 0, 2: 1},
            timeout=30,
            message="both states published",
        )
        gateway.request_stop()
        assert await asyncio.wait_for(task, timeout=30) == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    readings = subscriber.readings()
    assert {(r["device"], r["sensor"]) for r in readings} == {("pump", "state")}
    # The gateway stopped: the output is off and released.
    assert (pin_of(factory).state, pin_of(factory).function) == (False, "input")
