"""The edge-gateway command: exit codes, one clear line per error, never a traceback."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from drivers.serial_port import BAUDRATES
from gateway import __version__, cli
from gateway.errors import StoreError
from tests.support.cli import edge_gateway

ROOT = Path(__file__).resolve().parents[1]

BAD_CONFIG = """\
[gateway]
id = "gw 1"

[[devices]]
id = "thermo-1"
driver = "serial_line"
port = "/dev/ttyUSB0"

[[devices]]
id = "thermo-2"
driver = "serial_line"
port = "/dev/ttyUSB1"
baudrate = "9600"
prot = "x"
"""

BAD_CONFIG_LINES = [
    'edge-gateway: gateway.id: must be 1 to 64 letters, digits, ".", "_" or "-", '
    'starting with a letter or digit (got "gw 1")',
    "edge-gateway: devices[1].baudrate: must be one of "
    + ", ".join(str(b) for b in BAUDRATES)
    + ', or another whole number of bits per second from 50 to 12000000 (got "9600")',
    'edge-gateway: devices[1].prot: unknown key (did you mean "port"?)',
]


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG, encoding="utf-8")
    return path


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    # A copy only its owner reads: the example holds an inline token.
    example = tmp_path / "gateway.toml"
    example.write_text((ROOT / "examples" / "gateway.toml").read_text(encoding="utf-8"))
    example.chmod(0o600)
    result = edge_gateway("check-config", "-c", example)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    result = edge_gateway("check-config", "-c", "examples/gateway.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "examples/gateway.toml: valid; gateway gw-001, 2 device(s): thermo-1, "
        "power-meter (disabled); uplinks: mqtt (mqtt) mqtt://127.0.0.1:1883; "
        "local server: 127.0.0.1:8080\n"
    )


def test_check_config_names_every_bad_key_and_exits_2(bad_config: Path) -> None:
    result = edge_gateway("check-config", "-c", bad_config)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == BAD_CONFIG_LINES


def test_run_with_a_bad_file_exits_2_with_the_same_lines(bad_config: Path) -> None:
    result = edge_gateway("run", "--config", bad_config)
    assert result.returncode == 2
    assert result.stderr.splitlines() == BAD_CONFIG_LINES


def test_run_logs_one_line_per_event_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\nid = "gw-cli"\ndata_dir = "data"\n', encoding="utf-8")
    # Outside systemd, so each line carries a timestamp.
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    ) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "running" in line:
                break
        process.send_signal(signal.SIGTERM)
        rest, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert err == ""
    lines += rest.splitlines(keepends=True)
    assert lines
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\S+ (INFO|WARNING) [\w.]+: .+\n", line), line
    assert any("gateway gw-cli running" in line for line in lines)
    assert (tmp_path / "data" / "readings.db").exists()


def test_a_taken_local_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gateway.toml"
        settings = {
            "gateway": {"id": "gw-cli", "data_dir": "data"},
            "local": {"listen": f"127.0.0.1:{port}", "token": "t" * 24},
        }
        config.write_text(tomli_w.dumps(settings), encoding="utf-8")
        done = edge_gateway("run", "-c", config)
    assert done.returncode == 1
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("edge-gateway:")]
    assert error.startswith(f"edge-gateway: local server: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in done.stderr


def test_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[gateway]\nid = "gw"\n[[devices]\n', encoding="utf-8")
    result = edge_gateway("check-config", "-c", path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"edge-gateway: {path}: invalid TOML at line 3, column ")
    assert "Traceback" not in result.stderr


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    result = edge_gateway("check-config", "-c", path)
    assert result.returncode == 2
    assert result.stderr == f"edge-gateway: {path}: cannot read: No such file or directory\n"


def test_version() -> None:
    result = edge_gateway("--version")
    assert result.returncode == 0
    assert result.stdout == f"edge-gateway {__version__}\n"


def test_help_lists_every_command() -> None:
    result = edge_gateway("--help")
    assert result.returncode == 0
    for command in ("run", "check-config", "demo", "sim", "queue"):
        assert re.search(rf"^ +{command}\b", result.stdout, re.MULTILINE), command
    assert "exit codes" in result.stdout


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_command_help(command: str) -> None:
    result = edge_gateway(command, "--help")
    assert result.returncode == 0
    assert "-c FILE, --config FILE" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "a command is required"),
        (("check-config",), "the following arguments are required: -c/--config"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        (("--verbose",), "unrecognized arguments: --verbose"),
        (("run", "-c", "x.toml", "--log-level", "LOUD"), "invalid choice: 'LOUD'"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = edge_gateway(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: edge-gateway")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# What escapes a command: main() is called in this process, with a command
# that raises, because no real command fails on purpose.


def install_command(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-c", "--config")

    def failing(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setitem(cli._LOCAL, "check-config", (configure, failing))


def test_gateway_error_is_one_line_with_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_command(monkeypatch, StoreError("database is locked"))
    assert cli.main(["check-config"]) == 1
    assert capsys.readouterr().err == "edge-gateway: database is locked\n"


def test_unexpected_error_is_one_line_and_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_command(monkeypatch, RuntimeError("something broke"))
    assert cli.main(["check-config"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "edge-gateway: unexpected error: RuntimeError: something broke",
        "edge-gateway: run with --debug for the traceback",
    ]


@pytest.mark.parametrize("argv", [["--debug", "check-config"], ["check-config", "--debug"]])
def test_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    install_command(monkeypatch, RuntimeError("something broke"))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith("RuntimeError: something broke\n")


def test_interrupt_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_command(monkeypatch, KeyboardInterrupt())
    assert cli.main(["check-config"]) == 130
    assert capsys.readouterr() == ("", "")
