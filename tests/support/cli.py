"""The edge-gateway command: as a process, as users run it, and its queue sub-command in-process."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from gateway.store import queue_cli

ROOT = Path(__file__).resolve().parents[2]


def edge_gateway(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def queue(*argv: str) -> int:
    """``edge-gateway queue ARGV`` in this process, so a test can read what it printed."""
    parser = argparse.ArgumentParser(prog="edge-gateway queue")
    queue_cli.configure_parser(parser)
    return queue_cli.run(parser.parse_args(argv))
