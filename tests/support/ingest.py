"""The reference ingest server for tests: in-process, or as a process a test kills.

``served(settings)`` runs ``gateway.cloud.ingest_server.serve`` in a task for as long
as its block lasts. ``IngestProcess`` runs ``edge-gateway ingest`` as a process on
a fixed free port, so that a test can kill -9 it and start it again on the same
port; ``ingest_process`` is the fixture that kills whatever is left at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from gateway.cloud.ingest_server import PATH, IngestSettings, serve
from tests.support.common import free_port, wait_until

INGEST_TOKEN = "ingest-token-0123456789"


@contextlib.asynccontextmanager
async def served(settings: IngestSettings) -> AsyncIterator[IngestSettings]:
    started = asyncio.Event()
    task = asyncio.create_task(serve(settings, started), name="ingest-under-test")
    try:
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # raises what stopped the server
        assert started.is_set(), "the ingest server did not start"
        yield settings
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def ws_url(port: int, tls: bool = False) -> str:
    return f"{'wss' if tls else 'ws'}://127.0.0.1:{port}{PATH}"


async def ingest_metrics(port: int, tls_ca: Path | None = None) -> dict[str, int]:
    """The server's counters from /metrics, by name without the prefix."""
    import ssl  # noqa: PLC0415 - only for the TLS case

    context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
    url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context or True) as resp:
        text = await resp.text()
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        out[name.removeprefix("edge_gateway_ingest_")] = int(value)
    return out


@dataclass
class IngestProcess:
    root: Path
    db_url: str
    token: str | None = INGEST_TOKEN
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return ws_url(self.port)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        command = [sys.executable, "-m", "gateway", "ingest", "--listen"]
        command += [f"127.0.0.1:{self.port}", "--db", self.db_url]
        if self.token is not None:
            command += ["--token", self.token]
        with (self.root / f"ingest-{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    async def wait_ready(self, timeout: float = 20.0) -> None:
        async def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"ingest exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{self.port}/healthz") as resp,
                ):
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, timeout=timeout, interval=0.05, message="ingest /healthz")

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.root.glob("ingest-*.log"))
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def ingest_process(tmp_path: Path) -> Iterator[IngestProcess]:
    root = tmp_path / "ingest"
    root.mkdir()
    server = IngestProcess(root, f"sqlite://{root / 'landing.db'}")
    yield server
    server.stop()
