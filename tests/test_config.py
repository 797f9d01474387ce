"""The configuration loader: valid files become Settings, every bad key is named."""

from __future__ import annotations

import copy
import dataclasses
import re
import socket
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from drivers.gpio_input.settings import GpioInputSettings
from drivers.serial_line.settings import SerialLineSettings
from drivers.serial_port import BAUDRATES
from gateway.config import load_config, parse_config, parse_listen
from gateway.config_docs import devices_section
from gateway.driver_registry import drivers
from gateway.errors import ConfigError
from gateway.fields import parse_duration, parse_size
from gateway.settings import (
    CommandSettings,
    GatewaySettings,
    HealthSettings,
    LocalSettings,
    MqttSettings,
    Settings,
    StoreSettings,
    UplinkEntry,
    WebSocketSettings,
)
from tests.support.config import parse, problems, write

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
TOKEN = "0123456789abcdef-token"

DEVICE = '[[devices]]\nid = "d1"\ndriver = "serial_line"\nport = "/dev/ttyUSB0"\n'
GPIO = '[[devices]]\nid = "g1"\ndriver = "gpio_input"\npin = 17\n'


def serial_devices(settings: Settings) -> list[SerialLineSettings]:
    devices = [d for d in settings.devices if isinstance(d, SerialLineSettings)]
    assert len(devices) == len(settings.devices)
    return devices


def gpio_devices(settings: Settings) -> list[GpioInputSettings]:
    devices = [d for d in settings.devices if isinstance(d, GpioInputSettings)]
    assert len(devices) == len(settings.devices)
    return devices


# Valid files -----------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_file_is_valid(path: Path) -> None:
    settings = load_config(path)
    assert settings.source == path
    assert settings.devices


def test_full_example_values() -> None:
    settings = load_config(ROOT / "examples" / "gateway.toml")
    assert settings.gateway.id == "gw-001"
    assert settings.store.max_bytes == 1024**3
    assert settings.store.max_age == 30 * 86400
    assert settings.store.history == 3600
    thermo, meter = serial_devices(settings)
    assert thermo.units == {"t": "°C", "h": "%"}
    assert thermo.reconnect_min == 0.5
    assert thermo.expected_interval == 10
    assert meter.columns == ("voltage", "current", "power")
    assert not meter.enabled
    assert settings.uplink.mqtt is not None
    assert settings.uplink.mqtt.reconnect_max == 60
    assert settings.local is not None
    assert settings.local.token is not None


def test_full_example_shows_every_key() -> None:
    text = (ROOT / "examples" / "gateway.toml").read_text(encoding="utf-8")
    driver_settings = [spec.settings for spec in drivers().values()]
    for cls in (GatewaySettings, StoreSettings, *driver_settings, MqttSettings, LocalSettings):
        for f in dataclasses.fields(cls):
            # A key holding an array of tables is shown by one of its tables.
            shown = rf"^(# )?({f.name} = |\[\[devices\.{f.name}\]\])"
            assert re.search(shown, text, re.MULTILINE), f"{cls.__name__}.{f.name}"
    for f in dataclasses.fields(HealthSettings):
        assert re.search(rf"^{f.name} = ", text, re.MULTILINE)


def test_minimal_file_takes_every_default(tmp_path: Path) -> None:
    settings = parse(tmp_path, DEVICE)
    assert settings.gateway == GatewaySettings(id=socket.gethostname())
    assert settings.store == StoreSettings()
    assert settings.devices == (SerialLineSettings(id="d1", port="/dev/ttyUSB0"),)
    assert settings.uplink.mqtt is None
    assert settings.local is None
    assert settings.health == HealthSettings()


def test_empty_file_is_a_gateway_with_nothing_attached(tmp_path: Path) -> None:
    settings = parse(tmp_path, "")
    assert settings.devices == ()
    assert settings.source == tmp_path / "gateway.toml"


def test_parse_config_without_a_file_keeps_relative_paths() -> None:
    settings = parse_config({"gateway": {"data_dir": "data"}}, None)
    assert settings.gateway.data_dir == Path("data")
    assert settings.source is None


def test_relative_paths_are_resolved_against_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "token").write_text(TOKEN + "\n", encoding="utf-8")
    (conf / "ca.pem").write_text("-", encoding="utf-8")
    text = (
        '[gateway]\ndata_dir = "data"\n'
        '[uplink.mqtt]\nurl = "mqtts://broker.example"\nca_file = "ca.pem"\n'
        '[local]\ntoken_file = "token"\n'
    )
    settings = load_config(write(conf, text))
    assert settings.gateway.data_dir == conf / "data"
    assert settings.uplink.mqtt is not None
    assert settings.uplink.mqtt.ca_file == conf / "ca.pem"
    assert settings.local is not None
    assert settings.local.token_file == conf / "token"


def test_integers_are_accepted_where_numbers_are_expected(tmp_path: Path) -> None:
    text = DEVICE + "reconnect_min = 1\nstopbits = 2\n[health]\ndevice_silent_factor = 4\n"
    settings = parse(tmp_path, text)
    assert settings.devices[0].reconnect_min == 1.0
    assert serial_devices(settings)[0].stopbits == 2.0
    assert settings.health.device_silent_factor == 4.0


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    assert parse(tmp_path, '[gateway]\nlog_level = "debug"\n').gateway.log_level == "DEBUG"


def test_allowed_origins_are_normalised(tmp_path: Path) -> None:
    text = f'[local]\ntoken = "{TOKEN}"\nallowed_origins = ["https://dash.example.com/"]\n'
    local = parse(tmp_path, text).local
    assert local is not None
    assert local.allowed_origins == ("https://dash.example.com",)


def test_gpio_device_values(tmp_path: Path) -> None:
    text = GPIO + 'mode = "counter"\nbounce = "1ms"\nsample_interval = "5s"\nsensor = "water"\n'
    text += GPIO.replace('"g1"', '"g2"').replace("17", '"BOARD11"') + "pull_up = false\n"
    counter, level = gpio_devices(parse(tmp_path, text))
    assert (counter.pin, counter.mode, counter.bounce) == (17, "counter", 0.001)
    assert (counter.sample_interval, counter.sensor, counter.pull_up) == (5.0, "water", True)
    assert (level.pin, level.mode, level.pull_up) == ("BOARD11", "level", False)
    assert (level.bounce, level.sample_interval, level.sensor) == (0.01, 60.0, "")


def test_commented_gpio_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "gateway.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("# [[devices]]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line.removeprefix("# "))
    (door,) = gpio_devices(parse(tmp_path, "\n".join(block) + "\n"))
    assert (door.driver, door.pin, door.mode, door.sensor) == ("gpio_input", 17, "level", "closed")


@pytest.mark.parametrize("pin", [0, 53, "GPIO17", "BCM4", "BOARD40", "WPI0", "J8:11", "17"])
def test_gpio_pin_forms(tmp_path: Path, pin: object) -> None:
    text = GPIO.replace("17", f'"{pin}"' if isinstance(pin, str) else str(pin))
    assert gpio_devices(parse(tmp_path, text))[0].pin == pin


def test_keys_of_one_driver_are_refused_by_the_other(tmp_path: Path) -> None:
    text = GPIO + 'baudrate = 9600\nformat = "kv"\n' + DEVICE + "pull_up = false\nbounce = 0\n"
    assert problems(tmp_path, text) == [
        'devices[0].baudrate: not used by driver "gpio_input"',
        'devices[0].format: not used by driver "gpio_input"',
        'devices[1].bounce: not used by driver "serial_line"',
        'devices[1].pull_up: not used by driver "serial_line"',
    ]


# Problems, each with its exact path -----------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            DEVICE + DEVICE.replace("d1", "d2") + "baudrate = 12\n",
            "devices[1].baudrate: must be one of "
            + ", ".join(str(b) for b in BAUDRATES)
            + ", or another whole number of bits per second from 50 to 12000000 (got 12)",
        ),
        (DEVICE + "baudrate = 9600.0\n", "devices[0].baudrate: must be one of"),
        (DEVICE + "baudrat = 9600\n", 'devices[0].baudrat: unknown key (did you mean "baudrate"?)'),
        (DEVICE + "Format = 'kv'\n", 'devices[0].Format: unknown key (did you mean "format"?)'),
        (DEVICE + "colour = 'red'\n", "devices[0].colour: unknown key"),
        ('[[devices]]\ndriver = "serial_line"\nport = "x"\n', "devices[0].id: required"),
        ('[[devices]]\nid = "a"\nport = "x"\n', "devices[0].driver: required"),
        (
            DEVICE + DEVICE,
            'devices[1].id: "d1" is already the id of devices[0]',
        ),
        ('[[devices]]\nid = "d1"\ndriver = "serial_line"\n', "devices[0].port: required by"),
        (
            DEVICE + 'format = "csv"\n',
            'devices[0].columns: required when format = "csv"',
        ),
        (DEVICE + 'columns = ["a"]\n', 'devices[0].columns: only used with format = "csv"'),
        (DEVICE + 'format = "xml"\n', 'devices[0].format: must be one of "kv", "csv", "json"'),
        (DEVICE + 'parity = "X"\n', "devices[0].parity: must be one of"),
        (DEVICE + "stopbits = 3\n", "devices[0].stopbits: must be one of 1, 1.5, 2 (got 3)"),
        (DEVICE + "enabled = 1\n", "devices[0].enabled: must be true or false, not an integer"),
        (
            '[[devices]]\nid = "d"\ndriver = "serial_line"\nport = 5\n',
            "devices[0].port: must be a string, not an integer",
        ),
        (DEVICE + "units = { t = 1 }\n", 'devices[0].units: values must be strings ("t" is not)'),
        (DEVICE + 'columns = ["a", "a"]\nformat="csv"\n', 'devices[0].columns: names "a" more'),
        (DEVICE + "reconnect_min = -1\n", "devices[0].reconnect_min: must not be negative"),
        (DEVICE + "reconnect_min = 0\n", "devices[0].reconnect_min: must be longer than 0"),
        (
            DEVICE + 'reconnect_min = "1m"\nreconnect_max = "10s"\n',
            "devices[0].reconnect_max: must not be shorter than reconnect_min (60s)",
        ),
        (
            DEVICE + 'reconnect_min = "1m"\n',
            "devices[0].reconnect_min: must not be longer than reconnect_max (30s)",
        ),
        (DEVICE + "expected_interval = 'soon'\n", "devices[0].expected_interval: must be a dur"),
        (DEVICE + "max_line_bytes = 8\n", "devices[0].max_line_bytes: must be at least 16 bytes"),
        (
            '[[devices]]\nid = "g"\ndriver = "gpio_input"\n',
            'devices[0].pin: required by driver "gp',
        ),
        (GPIO.replace("17", "54"), "devices[0].pin: must be a BCM number from 0 to 53 (got 54)"),
        (GPIO.replace("17", "-1"), "devices[0].pin: must be a BCM number from 0 to 53 (got -1)"),
        (GPIO.replace("17", '"gpio17"'), "devices[0].pin: must be a BCM number from 0 to 53 or a"),
        (GPIO.replace("17", '"GPIO 17"'), "devices[0].pin: must be a BCM number from 0 to 53 or a"),
        (GPIO.replace("17", "17.0"), "devices[0].pin: must be a BCM number from 0 to 53 or a pin"),
        (GPIO.replace("17", "true"), "devices[0].pin: must be a BCM number from 0 to 53 or a pin"),
        (GPIO + "pull_up = 1\n", "devices[0].pull_up: must be true or false, not an integer"),
        (GPIO + "bounce = -0.01\n", "devices[0].bounce: must not be negative"),
        (GPIO + "bounce = 'short'\n", "devices[0].bounce: must be a duration"),
        (GPIO + "mode = 'edges'\n", 'devices[0].mode: must be one of "level", "counter"'),
        (GPIO + "mode = 'Counter'\n", 'devices[0].mode: must be one of "level", "counter" (got "C'),
        (GPIO + "sample_interval = -1\n", "devices[0].sample_interval: must not be negative"),
        (
            GPIO + "mode = 'counter'\nsample_interval = 0\n",
            'devices[0].sample_interval: must be longer than 0 seconds with mode = "counter"',
        ),
        (GPIO + "sensor = ''\n", "devices[0].sensor: must not be empty"),
        (GPIO + "port = '/dev/ttyUSB0'\n", 'devices[0].port: not used by driver "gpio_input"'),
        (DEVICE + "pin = 17\n", 'devices[0].pin: not used by driver "serial_line"'),
        (DEVICE + "mode = 'counter'\n", 'devices[0].mode: not used by driver "serial_line"'),
        (GPIO + "columns = ['a']\n", 'devices[0].columns: not used by driver "gpio_input"'),
        ("[gateway]\nid = 'gw/1'\n", "gateway.id: must be 1 to 64 letters, digits"),
        ("[gateway]\nlog_level = 'LOUD'\n", 'gateway.log_level: must be one of "DEBUG"'),
        ("[gateway]\ndata_dir = ''\n", "gateway.data_dir: must not be empty"),
        (
            "[store]\ndurability = 'sometimes'\n",
            'store.durability: must be one of "full", "normal"',
        ),
        ("[store]\nmax_bytes = '12 parsecs'\n", "store.max_bytes: must be a size"),
        ("[store]\nmax_bytes = '1kB'\n", "store.max_bytes: must be at least 1048576 bytes"),
        ("[store]\nmax_age = nan\n", "store.max_age: must be a finite number of seconds"),
        ("[store]\nmax_age = true\n", "store.max_age: must be a duration"),
        ("[store]\nmin_free_bytes = -1\n", "store.min_free_bytes: must not be negative"),
        ("[health]\ndevice_silent_factor = 0\n", "health.device_silent_factor: must be a positive"),
        ("[uplink.mqtt]\nurl = 'http://x'\n", "uplink.mqtt.url: unsupported scheme in 'http://x'"),
        ("[uplink.mqtt]\nurl = 'mqtt://'\n", "uplink.mqtt.url: no host in 'mqtt://'"),
        ("[uplink.mqtt]\nurl = 'mqtt://h:99999'\n", "uplink.mqtt.url: Port out of range"),
        ("[uplink.mqtt]\nurl = 'mqtt://h:0'\n", "uplink.mqtt.url: has port 0"),
        ("[uplink.mqtt]\nurl = 'mqtt://h?a=b'\n", "uplink.mqtt.url: must not have a path"),
        ("[uplink.mqtt]\nurl = 'mqtt://u:p@h'\n", "uplink.mqtt.url: must not hold credentials"),
        ("[uplink.mqtt]\nurl = 'mqtt://h/x'\n", "uplink.mqtt.url: must not have a path"),
        ("[uplink.mqtt]\ntopic_prefix = 'a/+/b'\n", "uplink.mqtt.topic_prefix: must be topic"),
        ("[uplink.mqtt]\ntopic_prefix = 'a//b'\n", "uplink.mqtt.topic_prefix: must be topic"),
        ("[uplink.mqtt]\nprotocol = 5\n", 'uplink.mqtt.protocol: must be one of "5", "3.1.1"'),
        ("[uplink.mqtt]\nkeepalive = 1.5\n", "uplink.mqtt.keepalive: must be a whole number"),
        ("[uplink.mqtt]\nmax_inflight = 0\n", "uplink.mqtt.max_inflight: must be from 1 to 65535"),
        ("[uplink.mqtt]\nbatch_max = true\n", "uplink.mqtt.batch_max: must be an integer, not a b"),
        ("[uplink.mqtt]\ntls_insecure = true\n", 'uplink.mqtt.tls_insecure: only used with "mqtts'),
        (
            "[uplink.mqtt]\nprotocol = '3.1.1'\npassword = 'p'\n",
            "uplink.mqtt.password: needs username with protocol 3.1.1",
        ),
        ("[uplink.kafka]\n", "uplink.kafka: unknown key"),
        ("[uplink.mqt]\n", 'uplink.mqt: unknown key (did you mean "mqtt"?)'),
        ("[uplinks.mqtt]\n", "uplinks: must be an array of tables ([[uplinks]] sections) (one"),
        ("[local]\n", "local.token: required (or token_file)"),
        (f"[local]\ntoken = '{TOKEN}'\nlisten = '8080'\n", 'local.listen: must be "host:port"'),
        ("[local]\ntoken = 'short'\n", "local.token: must be at least 16 characters"),
        (f"[local]\ntoken = '{TOKEN}'\nmax_clients = 0\n", "local.max_clients: must be a positive"),
        (
            f"[local]\ntoken = '{TOKEN}'\nallowed_origins = ['ftp://x']\n",
            "local.allowed_origins: must be origins like",
        ),
        ("local = 3\n", "local: must be a table, not an integer"),
        ("devices = 3\n", "devices: must be an array of tables"),
        ("[devices]\nid = 'x'\n", "devices: must be an array of tables"),
        ("gateway = 'gw'\n", "gateway: must be a table, not a string"),
    ],
)
def test_each_problem_is_named_by_its_path(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


@pytest.mark.parametrize("bad_id", ["a/b", "a+b", "a#b", "a b", "a\tb", "", ".", "$SYS", "é"])
def test_ids_must_be_safe_in_topics_and_urls(tmp_path: Path, bad_id: str) -> None:
    found = problems(tmp_path, DEVICE.replace('"d1"', f'"{bad_id}"'))
    assert found == [f"devices[0].id: {found[0].removeprefix('devices[0].id: ')}"]
    assert "letters, digits" in found[0]


def test_unknown_driver_names_the_known_ones(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, DEVICE.replace('"serial_line"', '"serial_lin"'))
    assert found.startswith('devices[0].driver: must be one of "')
    assert '"serial_line"' in found
    assert found.endswith('(did you mean "serial_line"?)')


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        "[gateway]\nid = 'a b'\nlog_levl = 'INFO'\n"
        "[store]\nmax_bytes = 'lots'\n"
        + DEVICE
        + "baudrate = 1\n"
        + DEVICE
        + "[uplink.mqtt]\nurl = 'tcp://x'\ncert_file = 'missing.crt'\n"
        "[local]\nlisten = 'localhost:0'\n"
    )
    found = problems(tmp_path, text)
    paths = [p.split(": ", 1)[0] for p in found]
    assert paths == [
        "gateway.id",
        "gateway.log_levl",
        "store.max_bytes",
        "devices[0].baudrate",
        "devices[1].id",
        "uplink.mqtt.url",
        "uplink.mqtt.cert_file",
        "uplink.mqtt.key_file",
        "local.listen",
        "local.token",
    ]
    assert found[7] == "uplink.mqtt.key_file: required together with cert_file"


def test_a_bad_value_does_not_cause_follow_up_problems(tmp_path: Path) -> None:
    # columns only fit format = "csv"; a bad format must not add a second complaint.
    found = problems(tmp_path, DEVICE + 'format = "CSV"\ncolumns = ["a"]\n')
    assert [p.split(":")[0] for p in found] == ["devices[0].format"]
    assert found[0].endswith('(did you mean "csv"?)')


# Files named in the configuration ------------------------------------


def test_files_must_exist(tmp_path: Path) -> None:
    text = "[uplink.mqtt]\nurl = 'mqtts://h'\nca_file = 'nope.pem'\n"
    assert problems(tmp_path, text) == [
        f"uplink.mqtt.ca_file: {tmp_path / 'nope.pem'} does not exist"
    ]


def test_files_must_be_files(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    text = "[uplink.mqtt]\nurl = 'mqtts://h'\nca_file = 'dir'\n"
    assert problems(tmp_path, text) == [f"uplink.mqtt.ca_file: {tmp_path / 'dir'} is not a file"]


def test_tls_files_only_with_a_tls_url(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-", encoding="utf-8")
    found = problems(tmp_path, "[uplink.mqtt]\nurl = 'ws://h'\nca_file = 'ca.pem'\n")
    assert found == ['uplink.mqtt.ca_file: only used with "mqtts://" or "wss://" urls']


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = trustme.CA().issue_cert("gw-1.example")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "c.key"))
    found = problems(tmp_path, "[uplink.mqtt]\nurl = 'mqtts://h'\nkey_file = 'c.key'\n")
    assert found == ["uplink.mqtt.cert_file: required together with key_file"]
    text = "[uplink.mqtt]\nurl = 'wss://h'\nkey_file = 'c.key'\ncert_file = 'c.crt'\n"
    mqtt = parse(tmp_path, text).uplink.mqtt
    assert mqtt is not None
    assert (mqtt.cert_file, mqtt.key_file) == (tmp_path / "c.crt", tmp_path / "c.key")


@pytest.mark.parametrize(
    "section", ["[uplink.mqtt]\nurl = 'mqtts://h'", f"[local]\ntoken = '{TOKEN}'"]
)
def test_a_certificate_that_does_not_load_with_its_key_is_refused(
    tmp_path: Path, section: str
) -> None:
    (tmp_path / "c.crt").write_text("not a certificate\n", encoding="utf-8")
    trustme.CA().issue_cert("gw-1.example").private_key_pem.write_to_path(str(tmp_path / "c.key"))
    found = problems(tmp_path, f"{section}\ncert_file = 'c.crt'\nkey_file = 'c.key'\n")
    name = "uplink.mqtt" if "mqtt" in section else "local"
    assert len(found) == 1
    assert found[0].startswith(f"{name}.cert_file: does not load with key_file: ")


def test_token_file_must_hold_a_token(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    (tmp_path / "short").write_text("abc\n", encoding="utf-8")
    assert problems(tmp_path, "[local]\ntoken_file = 'empty'\n") == [
        f"local.token_file: {tmp_path / 'empty'} is empty"
    ]
    (found,) = problems(tmp_path, "[local]\ntoken_file = 'short'\n")
    assert found.startswith(f"local.token_file: the token in {tmp_path / 'short'} must be")


def test_password_and_password_file_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("p", encoding="utf-8")
    found = problems(tmp_path, "[uplink.mqtt]\npassword = 'p'\npassword_file = 'secret'\n")
    assert found == ["uplink.mqtt.password_file: give either password or password_file, not both"]


def test_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN, encoding="utf-8")
    found = problems(tmp_path, f"[local]\ntoken = '{TOKEN}'\ntoken_file = 'token'\n")
    assert found == ["local.token_file: give either token or token_file, not both"]


# The file itself -----------------------------------------------------


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nid = "gw"\ndata_dir = \n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.path == str(path)
    assert problem.message.startswith("invalid TOML at line 3, column 12: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: cannot read: No such file or directory"
    ]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[gateway]\nid = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems[0].message.startswith("not UTF-8 text")


def test_config_error_is_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"store": {"max_bytes": "x"}, "gateway": {"id": "/"}}, None)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


# Values: sizes, durations, addresses ----------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("64kB", 64_000),
        ("512MiB", 512 * 1024**2),
        ("1GB", 10**9),
        ("1.5 KiB", 1536),
        ("2tib", 2 * 1024**4),
        ("10B", 10),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "1.2B", "12 parsecs", "-1kB", 1.5, True, "1e3"])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError, match="must"):
        parse_size(text)


UNITS = {"B": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2}


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNITS)))
def test_size_strings_round_trip(count: int, unit: str) -> None:
    assert parse_size(f"{count}{unit}") == count * UNITS[unit]
    assert parse_size(f"{count} {unit.upper()}") == count * UNITS[unit]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (2.5, 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "5 minutes", "-1s", -1, float("inf"), "1h30m", False])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="must"):
        parse_duration(text)


DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}


@given(
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(sorted(DURATION_UNITS)),
)
def test_duration_strings_round_trip(amount: Decimal, unit: str) -> None:
    expected = float(amount * DURATION_UNITS[unit])
    assert parse_duration(f"{amount:f}{unit}") == expected


@pytest.mark.parametrize(
    "url",
    [
        "mqtt://127.0.0.1:1883",
        "mqtts://broker.example",
        "mqtt://[::1]:1884/",
        "ws://h",
        "wss://h:8443/ws?x-amz-customauthorizer-name=gw",
    ],
)
def test_broker_urls(tmp_path: Path, url: str) -> None:
    mqtt = parse(tmp_path, f"[uplink.mqtt]\nurl = '{url}'\n").uplink.mqtt
    assert mqtt is not None
    assert mqtt.url == url


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:80", ("::", 80)),
        (":8080", ("", 8080)),
    ],
)
def test_listen_addresses(listen: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize(
    "listen", ["8080", "host:", "host:0", "host:65536", "::1:8080", "[::zz]:80", "h:x", "a b:1"]
)
def test_bad_listen_addresses(listen: str) -> None:
    with pytest.raises(ValueError, match=r"must|invalid"):
        parse_listen(listen)


# The documentation matches the code ------------------------------------

# The heading of the keys of an [[uplinks]] table of type "websocket".
WEBSOCKET_SECTION = "[[uplinks]] of type websocket"
SECTIONS: dict[str, tuple[type[Any], dict[str, Any], Any]] = {
    "[gateway]": (GatewaySettings, {}, lambda s: s.gateway),
    "[store]": (StoreSettings, {}, lambda s: s.store),
    "[uplink.mqtt]": (MqttSettings, {"uplink": {"mqtt": {}}}, lambda s: s.uplink.mqtt),
    WEBSOCKET_SECTION: (
        WebSocketSettings,
        {"uplinks": [{"name": "ingest", "type": "websocket"}]},
        lambda s: s.uplinks[0].transport,
    ),
    "[local]": (LocalSettings, {"local": {"token": TOKEN}}, lambda s: s.local),
    "[health]": (HealthSettings, {}, lambda s: s.health),
    "[commands]": (CommandSettings, {}, lambda s: s.commands),
}


def documented_keys() -> dict[str, dict[str, str]]:
    """Section -> key -> the default column of docs/configuration.md."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        heading = re.fullmatch(r"## `(\[.+\])`( of type `(\w+)`)?", line)
        if heading:
            section = heading[1] if heading[3] is None else f"{heading[1]} of type {heading[3]}"
            current = sections.setdefault(section, {})
        row = re.fullmatch(r"\| `(\w+)` \| [^|]+ \| (.+?) \| .+ \|", line)
        if row and current is not None:
            current[row[1]] = row[2]
    return sections


def documented_defaults_of(driver: str) -> dict[str, str]:
    """Key -> the default column, for the common device keys and ``driver``'s own table.

    Two drivers may give a key of the same name different defaults (``poll_interval``),
    so each driver's keys are read from its own table.
    """
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    own = text.split(f"### Keys of `{driver}`", 1)[1].split("\n#", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (.+?) \| .+ \|$", own, re.MULTILINE))
    return {**documented_keys()["[[devices]]"], **rows}


# A device of each driver, with the keys it requires.
DEVICES: dict[str, dict[str, Any]] = {
    "serial_line": {"id": "d", "driver": "serial_line", "port": "/dev/x"},
    "gpio_input": {"id": "d", "driver": "gpio_input", "pin": 17},
    "nmea": {"id": "d", "driver": "nmea", "port": "/dev/x"},
    "framed": {
        "id": "d",
        "driver": "framed",
        "port": "/dev/x",
        "fields": [{"name": "t", "type": "int16"}],
    },
    "modbus_rtu": {
        "id": "d",
        "driver": "modbus_rtu",
        "port": "/dev/x",
        "slave_id": 1,
        "registers": [{"sensor": "v", "address": 0}],
    },
    "onewire": {"id": "d", "driver": "onewire"},
    "gpio_output": {"id": "d", "driver": "gpio_output", "pin": 23},
    "adc": {"id": "d", "driver": "adc", "channels": [{"channel": 0, "sensor": "v"}]},
}


def test_documentation_lists_every_key_of_every_section() -> None:
    documented = documented_keys()
    assert set(documented) == {*SECTIONS, "[[devices]]", "[[uplinks]]"}
    for name, (cls, _, _) in SECTIONS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(documented[name]) == fields, name
    # An uplink's own keys; those of its type are [uplink.mqtt]'s.
    common = {f.name for f in dataclasses.fields(UplinkEntry)} - {"transport"}
    assert set(documented["[[uplinks]]"]) == common


def test_documented_defaults_are_the_defaults() -> None:
    for name, (cls, base, pick) in SECTIONS.items():
        for f in dataclasses.fields(cls):
            shown = documented_keys()[name][f.name]
            if shown == "required":
                assert f.default is dataclasses.MISSING
                assert f.default_factory is dataclasses.MISSING
                continue
            if shown == "the host name":
                assert f.default_factory is socket.gethostname
                continue
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if shown == "unset":
                assert default in (None, ""), f"{name} {f.name}"
                continue
            literal = re.fullmatch(r"`(.+)`", shown)
            assert literal, f"{name} {f.name}: {shown}"
            data = copy.deepcopy(base)
            table = data
            if name == WEBSOCKET_SECTION:
                table = data["uplinks"][0]
            else:
                for part in name.strip("[]").split("."):
                    table = table.setdefault(part, {})
            table[f.name] = tomllib.loads(f"v = {literal[1]}")["v"]
            assert getattr(pick(parse_config(data, None)), f.name) == default, f.name


def test_the_device_keys_of_the_documentation_are_written_from_the_settings_types() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert devices_section() in text, "run: python -m gateway.config_docs docs/configuration.md"


def test_every_driver_is_documented_and_has_an_example_device() -> None:
    assert set(DEVICES) == set(drivers())
    documented = documented_keys()["[[devices]]"]
    for spec in drivers().values():
        assert {f.name for f in dataclasses.fields(spec.settings)} <= set(documented)


@pytest.mark.parametrize("driver", sorted(DEVICES))
def test_each_drivers_shown_defaults_are_its_defaults(driver: str) -> None:
    """What the documentation shows as a default, written in a file, gives that default."""
    cls = drivers()[driver].settings
    documented = documented_defaults_of(driver)
    for f in dataclasses.fields(cls):
        literal = re.fullmatch(r"`(.+)`", documented[f.name])
        if literal is None:
            assert documented[f.name] in ("required", "unset"), f.name
            continue
        device = {**DEVICES[driver], f.name: tomllib.loads(f"v = {literal[1]}")["v"]}
        (parsed,) = parse_config({"devices": [device]}, None).devices
        (without,) = parse_config({"devices": [DEVICES[driver]]}, None).devices
        assert type(without) is cls
        assert parsed == without, f.name


@pytest.mark.parametrize(("value", "seconds"), [(0, 0.0), ("5ms", 0.005), ("1s", 1.0)])
def test_commit_spacing_takes_a_duration_up_to_a_second(value: object, seconds: float) -> None:
    settings = parse_config({"store": {"commit_spacing": value}}, None)
    assert settings.store.commit_spacing == seconds


def test_commit_spacing_beyond_a_second_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"store": {"commit_spacing": "2s"}}, None)
    assert [p.path for p in info.value.problems] == ["store.commit_spacing"]


def _serial_device(**keys: object) -> dict[str, object]:
    return {"devices": [{"id": "d1", "driver": "serial_line", "port": "/dev/ttyUSB0", **keys}]}


def test_read_interval_takes_a_duration_up_to_a_second() -> None:
    settings = parse_config(_serial_device(read_interval="20ms"), None)
    assert serial_devices(settings)[0].read_interval == 0.02
    settings = parse_config(_serial_device(read_interval=0), None)
    assert serial_devices(settings)[0].read_interval == 0


def test_read_interval_beyond_a_second_or_on_a_gpio_input_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_serial_device(read_interval="2s"), None)
    assert [p.path for p in info.value.problems] == ["devices[0].read_interval"]
    gpio = {"devices": [{"id": "g1", "driver": "gpio_input", "pin": 17, "read_interval": "5ms"}]}
    with pytest.raises(ConfigError) as info:
        parse_config(gpio, None)
    assert [p.path for p in info.value.problems] == ["devices[0].read_interval"]
