"""One simulated gateway: its directory, its configuration and its process.

Each member is a real ``edge-gateway run -c FILE`` process with a data directory of
its own, reading one or two simulated serial devices (pseudo-terminals whose master
the fleet holds) and publishing through its own TCP proxy to the fleet's broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from gateway.errors import GatewayError
from simulators.tcp_proxy import TcpProxy

# Stopping takes a commit and a last publish; a member that takes longer is killed.
STOP_TIMEOUT = 60.0
# A start imports the whole gateway: seconds on a small or busy machine, not minutes.
START_TIMEOUT = 300.0


@dataclass
class MemberConfig:
    gateway_id: str
    root: Path
    links: list[Path]  # the device links, one per simulated device
    mqtt_url: str
    topic_prefix: str
    local_port: int | None  # None: no local server
    protocol: str = "5"
    log_level: str = "WARNING"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def path(self) -> Path:
        return self.root / "gateway.toml"

    def write(self) -> Path:
        config: dict[str, object] = {
            "gateway": {
                "id": self.gateway_id,
                "data_dir": str(self.data_dir),
                "log_level": self.log_level,
            },
            "devices": [
                {
                    "id": f"counter-{k}",
                    "driver": "serial_line",
                    "port": str(link),
                    "baudrate": 115200,
                    "format": "kv",
                }
                for k, link in enumerate(self.links, 1)
            ],
            "uplink": {
                "mqtt": {
                    "url": self.mqtt_url,
                    "topic_prefix": self.topic_prefix,
                    "protocol": self.protocol,
                }
            },
        }
        if self.local_port is not None:
            config["local"] = {
                "listen": f"127.0.0.1:{self.local_port}",
                "token_file": str(self.root / "token"),
            }
        self.root.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            "# Written by `edge-gateway fleet-sim`.\n" + tomli_w.dumps(config), encoding="utf-8"
        )
        return self.path


@dataclass
class Member:
    """A gateway of the fleet; started, killed and restarted as the run asks."""

    config: MemberConfig
    proxy: TcpProxy
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    kills: int = 0
    # Exits nobody asked for (crashes), with their exit codes.
    unexpected_exits: list[int] = field(default_factory=list)
    _expected_exit: bool = False
    _watcher: asyncio.Task[None] | None = None

    @property
    def gateway_id(self) -> str:
        return self.config.gateway_id

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    async def start(self) -> None:
        """Start the process and return once it has connected through its proxy."""
        connections = self.proxy.accepted
        self.starts += 1
        with (self.config.root / "gateway.log").open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "run",
                "-c",
                str(self.config.path),
                stdout=log,
                stderr=log,
                # Its own session: a Ctrl-C in the terminal reaches the fleet, which
                # stops every member in order, not every member at once.
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._expected_exit = False
        self._watcher = asyncio.create_task(self._watch(self.process), name=f"watch:{self}")
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while self.proxy.accepted == connections:
                    if not self.running:
                        raise MemberError(self, "exited while starting")
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise MemberError(
                self, f"did not connect to the broker within {START_TIMEOUT:.0f} s"
            ) from None

    async def kill9(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would end it."""
        if self.process is None or not self.running:
            return
        self._expected_exit = True
        self.kills += 1
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM (a clean stop: the gateway commits what it read), SIGKILL if it hangs."""
        if self.process is None:
            return
        self._expected_exit = True
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._watcher is not None:
            await self._watcher

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if not self._expected_exit:
            self.unexpected_exits.append(code)

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = (self.config.root / "gateway.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def __str__(self) -> str:
        return self.gateway_id


class MemberError(GatewayError):
    """A member could not be started."""

    def __init__(self, member: Member, what: str) -> None:
        super().__init__(f"{member}: {what}: {member.log_tail()}")
