"""The real gateway process under the conditions the unit gives it, with this test as systemd.

The test binds the notification socket, starts ``edge-gateway run`` with
``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set, the unit's ``Environment=`` and ``UMask=``,
and with write-and-execute memory refused by the kernel (``PR_SET_MDWE``, what
``MemoryDenyWriteExecute=`` asks for), then plays the service manager's part: waits for
READY=1, watches the pings, reloads with SIGHUP and stops with SIGTERM.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.support.common import free_port, wait_until_sync
from tests.support.systemd import UNIT, service_section

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
WATCHDOG_USEC = 4_000_000


def _refuse_write_execute() -> None:
    """Runs in the child before exec; the kernel keeps the setting across exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def _unit_conditions() -> tuple[dict[str, str], int]:
    """The unit's Environment= assignments and its UMask=."""
    service = service_section(UNIT)
    environment = dict(
        item.split("=", 1) for line in service["Environment"] for item in line.split()
    )
    return environment, int(service["UMask"][0], 8)


class Manager:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    def drain(self) -> list[list[str]]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return self.messages

    def has(self, line: str) -> Callable[[], bool]:
        return lambda: any(line in message for message in self.drain())

    def index(self, line: str, start: int = 0) -> int:
        return next(i for i, message in enumerate(self.drain()) if i >= start and line in message)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(tmp_path / "notify")
    yield m
    m.sock.close()


def _start(tmp_path: Path, manager: Manager, port: int) -> subprocess.Popen[bytes]:
    config = tmp_path / "gateway.toml"
    settings = {
        "gateway": {"id": "gw-unit", "data_dir": str(tmp_path / "data")},
        "devices": [
            {"id": "thermo-1", "driver": "serial_line", "port": str(tmp_path / "no-such-port")}
        ],
        "local": {"listen": f"127.0.0.1:{port}", "token": "systemd-test-token-0123456789"},
    }
    config.write_text(tomli_w.dumps(settings))
    unit_environment, umask = _unit_conditions()
    env = {
        **os.environ,
        **unit_environment,
        "NOTIFY_SOCKET": str(manager.path),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
    }

    def in_child() -> None:
        os.umask(umask)
        _refuse_write_execute()

    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=in_child,  # noqa: PLW1509 - the child is started from a single-threaded test
    )


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        status: int = response.status
        return status


def test_gateway_notifies_ready_pings_reloads_and_stops(tmp_path: Path, manager: Manager) -> None:
    port = free_port()
    proc = _start(tmp_path, manager, port)
    try:
        wait_until_sync(manager.has("READY=1"), timeout=30, message="READY=1")
        # READY=1 promises a running local server and an open store.
        assert _healthz(port) == 200
        ready = manager.index("READY=1")
        assert any(line.startswith("STATUS=depth 0") for line in manager.messages[ready])
        db = tmp_path / "data" / "readings.db"
        assert db.exists()
        assert db.stat().st_mode & 0o077 == 0

        pings_before = len(manager.drain())
        wait_until_sync(
            lambda: ["WATCHDOG=1"] in manager.drain()[pings_before:], message="watchdog pings"
        )

        proc.send_signal(signal.SIGHUP)
        wait_until_sync(manager.has("RELOADING=1"), timeout=30, message="RELOADING=1")
        reloading = manager.index("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in manager.messages[reloading])
        wait_until_sync(
            lambda: any("READY=1" in m for m in manager.drain()[reloading + 1 :]),
            timeout=30,
            message="READY=1 after the reload",
        )
        assert _healthz(port) == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert "Traceback" not in stderr, stderr
    stopping = manager.index("STOPPING=1")
    assert stopping > manager.index("READY=1", reloading + 1)


def test_a_killed_hung_gateway_leaves_every_threads_stack(tmp_path: Path, manager: Manager) -> None:
    # What the journal shows after a watchdog kill: systemd sends SIGABRT, and the
    # unit's PYTHONFAULTHANDLER makes Python print each thread's stack first.
    port = free_port()
    proc = _start(tmp_path, manager, port)
    try:
        wait_until_sync(manager.has("READY=1"), timeout=30, message="READY=1")
        proc.send_signal(signal.SIGABRT)
        assert proc.wait(timeout=30) == -signal.SIGABRT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert "Fatal Python error: Aborted" in stderr
    assert "Current thread" in stderr
    assert 'File "' in stderr
