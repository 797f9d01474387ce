"""The shipped unit file and what checks it: a filesystem root to load it in, and
``systemd-analyze`` (``verify`` and ``security --offline``) run on it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "edge-gateway.service"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
MAX_EXPOSURE = 1.5


def add_host_units(root: Path) -> None:
    """Give ``root`` what the unit refers to on any host: target units and /bin/kill.

    Both are the host's own files.
    """
    system_units = root / "usr/lib/systemd/system"
    system_units.mkdir(parents=True)
    for target in Path("/usr/lib/systemd/system").glob("*.target"):
        shutil.copy(target, system_units)
    (root / "usr/bin").mkdir()
    shutil.copy("/usr/bin/kill", root / "usr/bin/kill")
    (root / "bin").symlink_to("usr/bin")


def make_root(root: Path, unit: Path, executable: Path) -> None:
    """A filesystem root with ``unit`` installed and ``executable`` where ExecStart= points."""
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    add_host_units(root)
    exec_start = root / "opt/edge-gateway/venv/bin/edge-gateway"
    exec_start.parent.mkdir(parents=True)
    shutil.copy(executable, exec_start)


def verify(root: Path, unit_name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", "--man=no", unit_name],
        capture_output=True,
        text=True,
        check=False,
    )


def exposure(
    unit: Path | str, root: Path | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """The overall score of ``unit`` (a file, or a unit name inside ``root``)."""
    in_root = [f"--root={root}"] if root is not None else []
    result = subprocess.run(
        [
            SYSTEMD_ANALYZE,
            "security",
            "--offline=true",
            *in_root,
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            "--no-pager",
            str(unit),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1)), result


def service_section(unit: Path) -> dict[str, list[str]]:
    """[Service] directives; a directive given several times keeps every value."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values
