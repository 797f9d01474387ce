"""The Ansible role run for real against this machine, installing under a prefix.

The play is ansible/site.yml itself, with the local connection and
``edge_gateway_root`` set to a directory under tmp, so every file lands in
``<tmp>/root/etc/...``, ``<tmp>/root/opt/...``, ``<tmp>/root/var/...``. Exercised for
real: the wheel built on the controller, the virtual environment and the pip install
from the machine's package index, the versioned releases and the ``venv`` link, the
secrets and their modes, the configuration template validated by the installed
``edge-gateway check-config``, the unit, its drop-in and the udev rules, the /healthz
check against the installed gateway, the rolling batches, upgrade and rollback.

Not exercised, because this machine has no systemd as PID 1 and the test must not
change its users: the apt packages, creating the user and groups, daemon-reload,
udev reload and the restart (the variables that switch them off are in ``HOST_VARS``).
The installed unit and drop-in are loaded by ``systemd-analyze verify`` against the
installed virtual environment instead, and the service user is root here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import yaml

from tests.support.ansible import (
    ANSIBLE_DIR,
    REPO,
    VENV_BIN,
    PlayResult,
    copy_source,
    play,
    unmeasured_environ,
)
from tests.support.common import free_port, wait_until_sync
from tests.support.systemd import add_host_units, verify

# The first play builds a wheel and installs a release from the package index (also
# the upgrade test): minutes on a loaded 2-core machine, more than the default bound.
pytestmark = pytest.mark.timeout(600)

TOKEN = "ansible-test-token-0123456789"
HEALTH_TASK = "Wait for /healthz of this gateway"
SECRETS_TASK = "Write the local API token"
CONFIG_TASK = "Write the configuration, refused unless check-config accepts it"
# The release the checkout builds, and a later one to upgrade to: read, not written
# here, so that bumping the version for a release leaves these tests as they are.
RELEASE = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
_MAJOR_MINOR, _, _PATCH = RELEASE.rpartition(".")
NEXT_RELEASE = f"{_MAJOR_MINOR}.{int(_PATCH) + 1}"

# The first play builds a wheel and a virtual environment and installs into it: about
# 90 s on a loaded 2-core machine, too close to the suite's 120 s, and the upgrade test
# runs four plays. Each play has its own 300 s deadline (Site.play).
pytestmark = pytest.mark.timeout(600)


@dataclass
class Site:
    """One prefix install: the inventory, the trees and how to run a playbook on them."""

    base: Path
    source: Path
    root: Path
    inventory: Path
    local_port: int

    @property
    def install_dir(self) -> Path:
        return self.root / "opt/edge-gateway"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc/edge-gateway"

    @property
    def executable(self) -> Path:
        return self.install_dir / "venv/bin/edge-gateway"

    def play(self, playbook: str, *args: str) -> PlayResult:
        return play(self.base, self.inventory, playbook, *args)


def _host_vars(site_root: Path, source: Path, wheels: Path, port: int) -> dict[str, object]:
    ca = trustme.CA()
    client = ca.issue_cert("gw-ansible")
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        # The parts this machine cannot take (see the module docstring).
        "edge_gateway_root": str(site_root),
        "edge_gateway_install_packages": False,
        "edge_gateway_manage_user": False,
        "edge_gateway_manage_services": False,
        "edge_gateway_user": "root",
        "edge_gateway_group": "root",
        "edge_gateway_healthcheck": False,
        "edge_gateway_healthcheck_retries": 2,
        "edge_gateway_healthcheck_delay": 1,
        "edge_gateway_source_dir": str(source),
        "edge_gateway_wheel_dir": str(wheels),
        # With the extra, the release installs every package the constraints pin.
        "edge_gateway_pip_extras": ["gpio"],
        # The configuration, with every secret the role knows how to place.
        "edge_gateway_id": "gw-ansible",
        "edge_gateway_local_listen": f"127.0.0.1:{port}",
        "edge_gateway_local_token": TOKEN,
        "edge_gateway_mqtt_url": f"mqtts://127.0.0.1:{free_port()}",
        "edge_gateway_mqtt_username": "gw-ansible",
        "edge_gateway_mqtt_password": "mqtt-secret",
        "edge_gateway_mqtt_ca_cert": ca.cert_pem.bytes().decode(),
        "edge_gateway_mqtt_client_cert": client.cert_chain_pems[0].bytes().decode(),
        "edge_gateway_mqtt_client_key": client.private_key_pem.bytes().decode(),
        "edge_gateway_mqtt_options": {"keepalive": "20s"},
        "edge_gateway_store": {"max_bytes": "64MiB"},
        "edge_gateway_devices": [
            {
                "id": "thermo-1",
                "driver": "serial_line",
                "port": "/dev/edge-gateway/thermo-1",
                "baudrate": 9600,
                "format": "kv",
                "units": {"t": "°C", "h": "%"},
                "expected_interval": "10s",
            }
        ],
        "edge_gateway_udev_serial": [
            {"name": "thermo-1", "vendor": "0403", "product": "6001", "serial": "A10K3XYZ"}
        ],
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    base = tmp_path_factory.mktemp("ansible")
    source, root = base / "src", base / "root"
    copy_source(source)
    port = free_port()
    inventory = base / "inventory.yml"
    hosts = {
        "gw-ansible": _host_vars(root, source, base / "wheels", port),
        # Only reached when the first batch succeeds (see the rollout test).
        "gw-second": _host_vars(base / "root-second", source, base / "wheels", free_port()),
    }
    inventory.write_text(yaml.safe_dump({"edge_gateways": {"hosts": hosts}}))
    return Site(base, source, root, inventory, port)


@pytest.fixture(scope="module")
def first_run(site: Site) -> PlayResult:
    return site.play("site.yml", "--limit", "gw-ansible")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_first_run_installs_the_release_config_secrets_and_unit(
    site: Site, first_run: PlayResult
) -> None:
    assert first_run.returncode == 0, first_run.output
    assert first_run.recap["gw-ansible"]["changed"] > 0
    assert first_run.recap["gw-ansible"]["failed"] == 0

    venv = site.install_dir / "venv"
    assert os.readlink(venv) == f"releases/{RELEASE}"
    assert (site.install_dir / f"releases/{RELEASE}/bin/python").exists()
    config = site.config_dir / "gateway.toml"
    assert _mode(site.config_dir) == 0o750
    assert _mode(config) == 0o640
    for secret in ("token", "mqtt-password", "mqtt-client.key"):
        path = site.config_dir / secret
        assert _mode(path) == 0o600, secret
        assert path.stat().st_uid == os.getuid()
    assert (site.config_dir / "token").read_text().strip() == TOKEN
    assert _mode(site.root / "var/lib/edge-gateway") == 0o700

    text = config.read_text()
    assert 'id = "gw-ansible"' in text
    assert f'token_file = "{site.config_dir}/token"' in text
    assert TOKEN not in text
    assert "mqtt-secret" not in text

    rules = (site.root / "etc/udev/rules.d/99-edge-gateway.rules").read_text()
    assert 'ATTRS{serial}=="A10K3XYZ", SYMLINK+="edge-gateway/thermo-1"' in rules
    unit = site.root / "etc/systemd/system/edge-gateway.service"
    assert unit.read_bytes() == (REPO / "systemd/edge-gateway.service").read_bytes()
    drop_ins = site.root / "etc/systemd/system/edge-gateway.service.d"
    site_conf = (drop_ins / "10-site.conf").read_text()
    for line in ("LimitNOFILE=4096", "MemoryMax=256M", "TasksMax=64"):
        assert f"\n{line}\n" in site_conf
    # What the installed release prints for the installed configuration.
    devices = (drop_ins / "20-devices.conf").read_text()
    assert f"\nSocketBindAllow=tcp:{site.local_port}\n" in devices
    assert "\nDeviceAllow=/dev/edge-gateway/thermo-1 rw\n" in devices
    assert "gpio" not in devices.replace("# Generated", "")


def test_the_installed_gateway_accepts_the_rendered_config(
    site: Site, first_run: PlayResult
) -> None:
    assert first_run.returncode == 0, first_run.output
    result = subprocess.run(
        [str(site.executable), "check-config", "-c", str(site.config_dir / "gateway.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "gateway gw-ansible, 1 device(s): thermo-1" in result.stdout


def test_installed_unit_and_drop_in_pass_systemd_analyze_verify(
    site: Site, first_run: PlayResult
) -> None:
    # ExecStart= resolves, inside the root, to the virtual environment the role made.
    assert first_run.returncode == 0, first_run.output
    add_host_units(site.root)
    try:
        result = verify(site.root, "edge-gateway.service")
    finally:
        shutil.rmtree(site.root / "usr")
        (site.root / "bin").unlink()
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _pins(text: str) -> dict[str, str]:
    """``name==version`` lines by normalized name (PEP 503)."""
    pins = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_release_installs_exactly_the_constrained_versions(
    site: Site, first_run: PlayResult
) -> None:
    assert first_run.returncode == 0, first_run.output
    shipped = site.install_dir / "wheels/edge_gateway-0.1.0-constraints.txt"
    assert shipped.read_bytes() == (REPO / "constraints.txt").read_bytes()
    freeze = subprocess.run(
        [
            str(site.install_dir / "venv/bin/python"),
            "-m",
            "pip",
            "freeze",
            "--all",  # setuptools too, as tools/freeze-constraints writes it
            "--exclude",
            "pip",
            "--exclude",
            "edge-gateway",
            "--disable-pip-version-check",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert _pins(freeze.stdout) == _pins(shipped.read_text())


def test_second_run_changes_nothing(site: Site, first_run: PlayResult) -> None:
    assert first_run.returncode == 0, first_run.output
    second = site.play("site.yml", "--limit", "gw-ansible")
    assert second.returncode == 0, second.output
    assert second.recap["gw-ansible"]["changed"] == 0, second.output


def test_secrets_stay_out_of_the_output_also_with_diff(site: Site, first_run: PlayResult) -> None:
    # The tests after this one need no particular secrets (the upgrade test's full run
    # puts the original ones back).
    assert first_run.returncode == 0, first_run.output
    changes = {
        # A secret in a file of its own, rotated.
        "edge_gateway_local_token": "rotated-local-token-0123456789",
        # A password inline in the configuration: its task hides it too.
        "edge_gateway_mqtt_password": "",
        "edge_gateway_mqtt_options": {"keepalive": "20s", "password": "inline-mqtt-secret"},
        # Not a secret: its diff shows that --diff is on and printing.
        "edge_gateway_watchdog_sec": 31,
    }
    result = site.play(
        "site.yml",
        "--limit",
        "gw-ansible",
        # The release is in place: from the secrets on is enough, and much faster.
        "--start-at-task",
        SECRETS_TASK,
        "--diff",
        "-e",
        json.dumps(changes),
    )
    assert result.returncode == 0, result.output
    assert "+WatchdogSec=31" in result.output
    assert (site.config_dir / "token").read_text().strip() == changes["edge_gateway_local_token"]
    assert 'password = "inline-mqtt-secret"' in (site.config_dir / "gateway.toml").read_text()
    for secret in ("rotated-local-token", "inline-mqtt-secret", "PRIVATE KEY"):
        assert secret not in result.output, secret


def test_a_config_check_config_refuses_never_lands(site: Site, first_run: PlayResult) -> None:
    assert first_run.returncode == 0, first_run.output
    config = site.config_dir / "gateway.toml"
    before = config.read_bytes()
    bad_device = {"id": "thermo-1", "driver": "serial_line", "port": "/dev/x", "baudrate": 12}
    result = site.play(
        "site.yml",
        "--limit",
        "gw-ansible",
        "--start-at-task",
        CONFIG_TASK,
        "-e",
        json.dumps({"edge_gateway_devices": [bad_device]}),
    )
    assert result.returncode != 0
    assert result.recap["gw-ansible"]["failed"] == 1
    assert "devices[0].baudrate" in result.output
    assert config.read_bytes() == before


@pytest.fixture
def running_gateway(site: Site, first_run: PlayResult) -> Iterator[subprocess.Popen[bytes]]:
    """The installed gateway, started from the installed venv with the installed config."""
    assert first_run.returncode == 0, first_run.output
    proc = subprocess.Popen(
        [str(site.executable), "run", "-c", str(site.config_dir / "gateway.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def healthz_answers() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{site.local_port}/healthz", timeout=1):
                return True
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_until_sync(healthz_answers, timeout=30, message="the installed gateway's /healthz")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0


def test_health_check_passes_against_the_installed_gateway(
    site: Site, running_gateway: subprocess.Popen[bytes]
) -> None:
    result = site.play(
        "site.yml",
        "--limit",
        "gw-ansible",
        "--start-at-task",
        HEALTH_TASK,
        "-e",
        json.dumps({"edge_gateway_healthcheck": True}),
    )
    assert result.returncode == 0, result.output
    assert result.recap["gw-ansible"] == {"ok": 1, "changed": 0, "unreachable": 0, "failed": 0}


def test_an_unhealthy_canary_fails_and_stops_the_rollout(site: Site, first_run: PlayResult) -> None:
    # Nothing answers on the canary's port: its health check fails, and the
    # rollout never reaches the host of the next batch.
    assert first_run.returncode == 0, first_run.output
    result = site.play(
        "site.yml", "--start-at-task", HEALTH_TASK, "-e", "edge_gateway_healthcheck=true"
    )
    assert result.returncode != 0
    assert result.recap["gw-ansible"]["failed"] == 1
    assert "gw-second" not in result.recap


def test_upgrade_keeps_the_previous_release_rollback_restores_it_prune_spares_it(
    site: Site, first_run: PlayResult
) -> None:
    assert first_run.returncode == 0, first_run.output
    pyproject = site.source / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(f'version = "{RELEASE}"', f'version = "{NEXT_RELEASE}"')
    )
    venv = site.install_dir / "venv"

    upgrade = site.play("site.yml", "--limit", "gw-ansible")
    assert upgrade.returncode == 0, upgrade.output
    assert os.readlink(venv) == f"releases/{NEXT_RELEASE}"
    assert (site.install_dir / f"releases/{RELEASE}/bin/edge-gateway").exists()
    assert _installed_version(site) == NEXT_RELEASE

    rollback = site.play(
        "rollback.yml", "--limit", "gw-ansible", "-e", f"edge_gateway_rollback_to={RELEASE}"
    )
    assert rollback.returncode == 0, rollback.output
    assert os.readlink(venv) == f"releases/{RELEASE}"
    assert _installed_version(site) == RELEASE

    missing = site.play(
        "rollback.yml", "--limit", "gw-ansible", "-e", "edge_gateway_rollback_to=0.0.1"
    )
    assert missing.returncode != 0
    assert os.readlink(venv) == f"releases/{RELEASE}"

    # Keeping one release keeps the active one, though the other is newer.
    pruned = site.play(
        "site.yml",
        "--limit",
        "gw-ansible",
        "--start-at-task",
        "Find the active release",
        "-e",
        json.dumps({"edge_gateway_keep_releases": 1}),
    )
    assert pruned.returncode == 0, pruned.output
    assert sorted(p.name for p in (site.install_dir / "releases").iterdir()) == [RELEASE]
    assert _installed_version(site) == RELEASE


def _installed_version(site: Site) -> str:
    """The distribution version in the environment the venv link points at."""
    result = subprocess.run(
        [
            str(site.install_dir / "venv/bin/python"),
            "-I",  # not the checkout's metadata from the working directory
            "-c",
            "from importlib.metadata import version; print(version('edge-gateway'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_ansible_lint_and_syntax_check_are_clean(tmp_path: Path) -> None:
    env = {
        **unmeasured_environ(),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "NO_COLOR": "1",
    }
    syntax = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "--syntax-check",
            "site.yml",
            "rollback.yml",
            "rollout.yml",
        ],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    lint = subprocess.run(
        [str(VENV_BIN / "ansible-lint"), "--offline", "--profile", "production"],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "0 failure(s), 0 warning(s)" in lint.stdout + lint.stderr
