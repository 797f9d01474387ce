"""``edge-gateway consume`` as a subprocess, for tests that run, kill and restart instances."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.support.common import free_port, wait_until


@dataclass
class ConsumerProcess:
    """One consumer instance: same name and metrics port across restarts."""

    root: Path
    brokers: Sequence[str]
    db_url: str
    instance: str
    extra: Sequence[str] = ()
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = (self.root / f"{self.instance}-{self.starts}.log").open("wb")
        brokers = [arg for url in self.brokers for arg in ("--broker", url)]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "consume",
                *brokers,
                "--db",
                self.db_url,
                "--instance",
                self.instance,
                "--metrics-listen",
                f"127.0.0.1:{self.metrics_port}",
                *self.extra,
                "--debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def log_text(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted(self.root.glob(f"{self.instance}-*.log"))
        )

    async def health(self) -> dict[str, object] | None:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.metrics_port}/healthz") as response,
            ):
                body: dict[str, object] = await response.json()
                return body
        except aiohttp.ClientError:
            return None

    async def metrics(self) -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as response,
        ):
            return await response.text()

    async def wait_connected(self, timeout: float = 60.0) -> None:
        async def connected() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, f"consumer exited:\n{self.log_text()}"
            health = await self.health()
            return bool(health and health["connected"])

        await wait_until(connected, timeout=timeout, interval=0.1, message=f"{self.instance} up")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def consumer_processes() -> Iterator[list[ConsumerProcess]]:
    """Consumers a test appends here are stopped at teardown."""
    made: list[ConsumerProcess] = []
    yield made
    for consumer in made:
        consumer.stop()
