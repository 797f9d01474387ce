"""ansible/rollout.yml over a fleet of hosts: batches, a health gate, a bad release rolled back.

Each host is this machine with the local connection and a prefix of its own
(``edge_gateway_root``), running its own gateway on its own port. No systemd runs
here, so the role restarts a host's gateway with ``edge_gateway_restart_command``: a
script that stops it by its pid file and starts the active release in the background
with start-stop-daemon, as a site without systemd would.

The releases are real builds of this checkout (a wheel each, installed into a virtual
environment of its own), staged on every host as the rollout's first play would, but
sharing the checkout's dependencies instead of installing them from the package index
per host (the first play itself is tests/test_ansible_role.py's). The bad release is
a build with a driver missing: it runs on hosts that do not use that driver and fails
on the one that does, in the second batch; so the canary takes it, the second batch
goes back to the release it ran, and the hosts after it are not touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.ansible import copy_source, play
from tests.support.common import free_port

# Two rollouts over several hosts, every task of a host a process of its own: about
# 10 minutes for four hosts on the loaded 2-core CI machine, so `make soak` runs them;
# the default suite lints and syntax-checks rollout.yml (tests/test_ansible_role.py).
pytestmark = [pytest.mark.soak, pytest.mark.timeout(2400)]

TOKEN = "rollout-test-token-0123456789"
GOOD, BAD = "9.0.1", "9.0.2"
# The host of the second batch that uses the driver the bad release lacks.
NMEA_HOST = "gw-02"
RESTART = """#!/bin/sh
# Restarts this host's gateway: what systemd does on a real host.
pidfile={root}/run/edge-gateway.pid
start-stop-daemon --stop --quiet --oknodo --pidfile "$pidfile" --remove-pidfile \\
    --retry TERM/30/KILL/5
exec start-stop-daemon --start --quiet --background --make-pidfile --pidfile "$pidfile" \\
    --output {root}/gateway.log \\
    --startas {root}/opt/edge-gateway/venv/bin/edge-gateway -- \\
    run -c {root}/etc/edge-gateway/gateway.toml
"""


@dataclass
class Host:
    name: str
    root: Path
    port: int

    @property
    def active(self) -> str:
        return os.readlink(self.root / "opt/edge-gateway/venv")

    @property
    def pid(self) -> int:
        return int((self.root / "run/edge-gateway.pid").read_text())

    def answering_version(self) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1/status",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            version: str = json.load(response)["version"]
            return version


@dataclass
class Fleet:
    base: Path
    inventory: Path
    hosts: list[Host]

    def rollout(self, version: str, *args: str) -> tuple[int, str, dict[str, dict[str, int]]]:
        result = play(
            self.base,
            self.inventory,
            "rollout.yml",
            "--tags",
            "switch",
            "-e",
            json.dumps({"edge_gateway_version": version}),
            *args,
        )
        return result.returncode, result.output, result.recap


def _dependencies(target: Path) -> Path:
    """The checkout's installed dependencies, without the checkout's own package."""
    target.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name.startswith(("edge_gateway", "__editable__", "_edge_gateway")):
            continue
        (target / entry.name).symlink_to(entry)
    return target


def _release(source: Path, version: str, dest: Path, deps: Path, *, drop: str = "") -> Path:
    """A real build of ``source`` as ``version``, in a virtual environment of its own."""
    tree = dest.with_name(dest.name + "-src")
    shutil.copytree(source, tree)
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('version = "', f'version = "{version}"  # was "', 1))
    if drop:
        shutil.rmtree(tree / drop)
    wheels = dest.with_name(dest.name + "-wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(tree)],
        check=True,
        capture_output=True,
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    purelib = subprocess.run(
        [
            str(dest / "bin/python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text(f"{deps}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(dest / "bin/python"),
            "install",
            "-q",
            "--no-deps",
            str(next(wheels.glob("*.whl"))),
        ],
        check=True,
        capture_output=True,
    )
    return dest


def _host_vars(host: Host, source: Path, devices: list[dict[str, object]]) -> dict[str, object]:
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        "edge_gateway_root": str(host.root),
        "edge_gateway_install_packages": False,
        "edge_gateway_manage_user": False,
        "edge_gateway_manage_services": False,
        "edge_gateway_user": "root",
        "edge_gateway_group": "root",
        "edge_gateway_restart_command": ["sh", str(host.root / "restart.sh")],
        "edge_gateway_healthcheck_retries": 60,
        "edge_gateway_healthcheck_delay": 1,
        "edge_gateway_source_dir": str(source),
        "edge_gateway_id": host.name,
        "edge_gateway_local_listen": f"127.0.0.1:{host.port}",
        "edge_gateway_local_token": TOKEN,
        "edge_gateway_devices": devices,
    }


@contextlib.contextmanager
def _make_fleet(base: Path, count: int) -> Iterator[Fleet]:
    source = base / "src"
    copy_source(source)
    deps = _dependencies(base / "deps")
    releases = {
        GOOD: _release(source, GOOD, base / "releases" / GOOD, deps),
        # Packaged without the nmea driver, whose entry point it still declares.
        BAD: _release(source, BAD, base / "releases" / BAD, deps, drop="drivers/nmea"),
    }
    hosts = [Host(f"gw-{i:02d}", base / f"host-{i:02d}", free_port()) for i in range(1, count + 1)]
    inventory: dict[str, object] = {}
    for host in hosts:
        staged = host.root / "opt/edge-gateway/releases"
        staged.mkdir(parents=True)
        (host.root / "run").mkdir()
        for version, venv in releases.items():
            (staged / version).symlink_to(venv)
        (host.root / "restart.sh").write_text(RESTART.format(root=host.root))
        devices: list[dict[str, object]] = []
        if host.name == NMEA_HOST:
            devices = [
                {"id": "gps-1", "driver": "nmea", "port": str(host.root / "dev/gps")},
            ]
        inventory[host.name] = _host_vars(host, source, devices)
    path = base / "inventory.yml"
    path.write_text(yaml.safe_dump({"edge_gateways": {"hosts": inventory}}))
    fleet = Fleet(base, path, hosts)
    try:
        yield fleet
    finally:
        for host in hosts:
            # The gateway this test started, by the pid its restart script wrote.
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                os.kill(host.pid, signal.SIGTERM)


def _rollout_and_bad_release(fleet: Fleet, batches: list[int]) -> None:
    serial = ["-e", json.dumps({"edge_gateway_rollout_batches": batches})]
    code, output, recap = fleet.rollout(GOOD, *serial)
    assert code == 0, output
    for host in fleet.hosts:
        assert host.active == f"releases/{GOOD}", host.name
        assert host.answering_version() == GOOD, host.name
        assert recap[host.name]["failed"] == 0
    pids = {host.name: host.pid for host in fleet.hosts}

    code, output, recap = fleet.rollout(BAD, *serial)
    assert code != 0
    first, second = batches[0], batches[0] + batches[1]
    canary, failed_batch, later = (
        fleet.hosts[:first],
        fleet.hosts[first:second],
        fleet.hosts[second:],
    )
    assert NMEA_HOST in {h.name for h in failed_batch}
    for host in canary:
        assert host.active == f"releases/{BAD}", host.name
        assert host.answering_version() == BAD, host.name
    for host in failed_batch:
        # Back on the release it ran, running again (a new process), the batch failed.
        assert host.active == f"releases/{GOOD}", host.name
        assert host.answering_version() == GOOD, host.name
        assert host.pid != pids[host.name]
        assert recap[host.name]["failed"] == 1, output
    for host in later:
        # Never reached: the same process, on the release it ran.
        assert host.name not in recap
        assert host.active == f"releases/{GOOD}", host.name
        assert host.pid == pids[host.name]
    assert "failed the switch" in output


def test_a_bad_release_stops_at_its_batch_which_goes_back(tmp_path: Path) -> None:
    # Four hosts: the canary, a batch of two with the host the release breaks, one after.
    batches = [1, 2]
    with _make_fleet(tmp_path, 4) as fleet:
        _rollout_and_bad_release(fleet, batches)


def test_eight_hosts_in_three_batches(tmp_path: Path) -> None:
    batches = [1, 3]
    with _make_fleet(tmp_path, 8) as fleet:
        _rollout_and_bad_release(fleet, batches)
