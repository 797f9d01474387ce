"""Running the project's playbooks for real from a test: ansible-playbook as a process,
its recap parsed, and a copy of the checkout to build releases from."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent

RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class PlayResult:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]]


def unmeasured_environ() -> dict[str, str]:
    """This process's environment without coverage's hook for subprocesses.

    Ansible's own processes run no code of this checkout (the gateway it starts runs
    from the release's environment), and measuring them under `make test` made a play
    several times slower.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


def play(base: Path, inventory: Path, playbook: str, *args: str) -> PlayResult:
    """``ansible-playbook -i INVENTORY PLAYBOOK ARGS`` in ansible/, state kept under ``base``."""
    env = {
        **unmeasured_environ(),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOME": str(base / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(base / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), playbook, *args],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP.finditer(result.stdout)
    }
    return PlayResult(result.returncode, result.stdout + result.stderr, recap)


def copy_source(destination: Path) -> None:
    """The checkout without its build and tool state: a wheel built from it leaves
    nothing in the checkout."""
    shutil.copytree(
        REPO,
        destination,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".ansible", "*_cache", "__pycache__", "build", "dist", "*.egg-info"
        ),
    )
