"""Any baud rate a port supports: standard ones silently, the others with a warning."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from drivers.serial_line.settings import SerialLineSettings
from drivers.serial_line.transport import SerialLineDriver
from drivers.serial_port import BAUDRATES
from gateway.config import device_warnings, parse_config
from gateway.errors import ConfigError
from gateway.reading import Sample
from gateway.retry import Backoff
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.drivers import RecordingSink, running, wait_open

ROOT = Path(__file__).resolve().parents[1]


def serial_device(**keys: object) -> dict[str, object]:
    return {"devices": [{"id": "d1", "driver": "serial_line", "port": "/dev/x", **keys}]}


@pytest.mark.parametrize("rate", [74_880, 250_000, 1_000_000, 50, 12_000_000])
def test_a_non_standard_rate_is_valid_with_a_warning(rate: int) -> None:
    settings = parse_config(serial_device(baudrate=rate), None)
    (device,) = settings.devices
    assert isinstance(device, SerialLineSettings)
    assert device.baudrate == rate
    assert [str(w) for w in device_warnings(settings)] == [
        f"devices[0].baudrate: {rate} is not a standard rate; the port and its adapter must "
        "support it (many USB adapters do, a Raspberry Pi's mini UART may not)"
    ]


def test_a_standard_rate_gives_no_warning() -> None:
    for rate in BAUDRATES:
        assert device_warnings(parse_config(serial_device(baudrate=rate), None)) == []


@pytest.mark.parametrize("value", [49, 12_000_001, 0, -9600, 9600.0, "9600", True])
def test_what_no_port_does_is_refused(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(serial_device(baudrate=value), None)
    (problem,) = info.value.problems
    assert problem.path == "devices[0].baudrate"
    assert problem.message.startswith("must be one of 300, 1200,")
    assert "or another whole number of bits per second from 50 to 12000000 (got " in str(problem)


def test_check_config_prints_the_warning_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[[devices]]\nid = "printer"\ndriver = "serial_line"\nport = "/dev/x"\nbaudrate = 250000\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        "edge-gateway: warning: devices[0].baudrate: 250000 is not a standard rate;"
    )
    assert result.stdout.startswith(f"{path}: valid;")


class Samples(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.samples: list[Sample] = []

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)


async def test_a_port_is_opened_and_read_at_a_non_standard_rate(tmp_path: Path) -> None:
    link = tmp_path / "esp8266"
    sink = Samples()
    settings = SerialLineSettings(id="esp-1", port=str(link), baudrate=74_880)
    async with PtyDevice("counter", link, rate=500, count=20, paused=True) as dev:
        driver = SerialLineDriver(settings, sink, backoff=Backoff(0.02, 0.2, missing_poll=0.02))
        async with running(driver):
            # pyserial sets a rate outside the termios table with BOTHER; had the port
            # refused it, the open would fail and the driver would wait and retry.
            await wait_open(driver)
            dev.resume()
            await wait_until(lambda: len(sink.samples) == 20, message="20 lines")
    assert [s.value for s in sink.samples] == list(range(1, 21))
