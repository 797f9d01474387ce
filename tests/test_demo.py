"""`edge-gateway demo`, the README's first command, run for real for a few seconds.

Simulated devices on ptys, the real gateway, and (when mosquitto is installed, as
`make test` ensures) a private broker playing the cloud. The directory's name has a
quote and a backslash in it: the demo writes its paths into a TOML file.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

from drivers.serial_port import SerialPortSettings
from gateway.config import load_config, toml_value
from gateway.demo import GPS_ID, METER_ID, METER_SENSORS, REPORT_EVERY
from gateway.store.schema import DB_NAME


def run_demo(root: Path, *options: str, duration: float) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gateway", "demo", "--dir", str(root), "--port", "0"]
    argv += ["--duration", str(duration), *options]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def stored_readings(root: Path) -> int:
    with sqlite3.connect(f"file:{root / 'data' / DB_NAME}?mode=ro", uri=True) as conn:
        (count,) = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(count)


def stored_sensors(root: Path, device: str) -> set[str]:
    with sqlite3.connect(f"file:{root / 'data' / DB_NAME}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT payload FROM readings WHERE device = ?", (device,))
        return {json.loads(payload)["sensor"] for (payload,) in rows}


def test_offline_demo_keeps_readings_in_the_log(tmp_path: Path) -> None:
    root = tmp_path / 'a "quoted" \\ dir'
    done = run_demo(root, "--offline", duration=2.0)
    assert done.returncode == 0, done.stderr
    assert "cloud: none" in done.stdout
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/#token=\S+", done.stdout)
    settings = load_config(root / "gateway.toml")
    assert settings.gateway.data_dir == root / "data"
    ports = [d.port for d in settings.devices if isinstance(d, SerialPortSettings)]
    assert len(ports) == len(settings.devices)
    assert {Path(port).parent for port in ports} == {root / "dev"}
    assert stored_readings(root) > 0


def test_demo_with_a_private_broker_delivers_to_the_cloud(tmp_path: Path) -> None:
    root = tmp_path / 'a "quoted" \\ dir'
    # Long enough for one progress report.
    done = run_demo(root, duration=REPORT_EVERY + 2.0)
    assert done.returncode == 0, done.stderr
    assert "cloud: private mosquitto on mqtt://127.0.0.1:" in done.stdout
    received = re.findall(r"cloud received (\d+) readings", done.stdout)
    assert received, done.stdout
    assert int(received[-1]) > 0
    assert stored_readings(root) > 0
    # Next to the thermometers: an energy meter on a Modbus bus, and a GPS.
    assert stored_sensors(root, METER_ID) == set(METER_SENSORS)
    assert {"lat", "lon", "speed"} <= stored_sensors(root, GPS_ID)


def test_toml_value_spells_any_string_as_a_basic_string() -> None:
    awkward = 'C:\\dir "x"\n\t\x00\x7f°'
    assert toml_value(True) == "true"
    assert toml_value(2.5) == "2.5"
    assert tomllib.loads(f"key = {toml_value(awkward)}") == {"key": awkward}
