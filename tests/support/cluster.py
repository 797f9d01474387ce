"""A private 3-node RabbitMQ cluster (MQTT plugin, quorum queues) for tests and benchmarks.

Each node is a ``rabbitmq-server`` process of the Debian package, run as the
current user with everything under one temporary directory: its own Erlang port
mapper (``epmd`` on a free port, so two clusters or a system RabbitMQ never meet),
its own cookie, node names unique to this cluster, and AMQP, MQTT and
distribution ports on 127.0.0.1. No system service is involved.

The first node boots alone; the other two then boot in parallel and join it
(classic peer discovery listing the first node), which forms the cluster without
the race two fresh nodes have when each could found a cluster of its own.

``kill9(i)`` kills one node outright (SIGKILL, as a crashed host), ``restart(i)``
boots it again on the same ports and data, and it rejoins the cluster.

Fixture: ``rabbit_cluster`` (module scope: a cluster takes seconds to boot, so the
tests of one module share it and leave it whole).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.common import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# The Debian wrapper in /usr/sbin switches to the rabbitmq user and its home;
# the scripts it wraps run as whoever starts them.
RABBITMQ_SERVER = RABBITMQ_BIN / "rabbitmq-server"
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
BOOT_TIMEOUT = 120.0

# Schedulers that spin while idle cost CPU that a 2-core machine shared by many
# processes cannot spare; they only matter for latency at the microsecond scale.
_ERL_ARGS = "+sbwt none +sbwtdcpu none +sbwtdio none +S 2:2 +A 4"


def available() -> bool:
    return RABBITMQ_SERVER.exists() and Path(EPMD).exists()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RabbitNode:
    """One node: its name, ports and directory; the process while it runs."""

    index: int
    name: str
    root: Path
    amqp_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    boots: int = 0

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        logs = sorted(self.root.glob("console-*.log"))
        return "\n".join(path.read_text(errors="replace")[-4000:] for path in logs)


class RabbitCluster:
    """Three RabbitMQ nodes forming one cluster on loopback ports."""

    size = 3

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.epmd_port = free_port()
        tag = secrets.token_hex(3)
        self.nodes = [
            RabbitNode(i, f"rabbit{i + 1}-{tag}@localhost", workdir / f"node{i + 1}")
            for i in range(self.size)
        ]
        self._epmd: subprocess.Popen[bytes] | None = None
        (workdir / ".erlang.cookie").write_text(secrets.token_hex(16))
        (workdir / ".erlang.cookie").chmod(0o400)
        (workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

    @property
    def amqp_urls(self) -> list[str]:
        return [node.amqp_url for node in self.nodes]

    def _env(self, node: RabbitNode) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.workdir),  # where Erlang finds the cookie
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_BASE": str(node.root),
            "RABBITMQ_MNESIA_BASE": str(node.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.root / "log"),
            "RABBITMQ_PID_FILE": str(node.root / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(node.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.root / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(node.root / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": _ERL_ARGS,
            "RABBITMQ_LOGS": "-",  # to the console log the test keeps
        }

    def _write_config(self, node: RabbitNode) -> None:
        node.root.mkdir(parents=True, exist_ok=True)
        first = self.nodes[0].name
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}",
            f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}",
            "mqtt.allow_anonymous = true",
            "cluster_formation.peer_discovery_backend = classic_config",
            f"cluster_formation.classic_config.nodes.1 = {first}",
            # A temporary directory may sit on a nearly full disk; the default
            # 50 MB alarm would block publishers for reasons unrelated to the test.
            "disk_free_limit.absolute = 1MB",
            "log.console.level = warning",
        ]
        (node.root / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (node.root / "advanced.config").write_text("[].\n")
        (node.root / "rabbitmq-env.conf").write_text("")

    def _boot(self, node: RabbitNode) -> None:
        assert not node.running(), f"{node.name} already runs"
        self._write_config(node)
        node.boots += 1
        log = (node.root / f"console-{node.boots}.log").open("wb")
        node.process = subprocess.Popen(
            [str(RABBITMQ_SERVER)],
            env=self._env(node),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # kill9 takes the whole node: script, beam, helpers
        )
        log.close()

    def _await(self, nodes: list[RabbitNode], timeout: float = BOOT_TIMEOUT) -> None:
        """Until every node's MQTT listener accepts: it opens last, once the node has joined."""
        deadline = time.monotonic() + timeout
        waiting = list(nodes)
        while waiting:
            for node in list(waiting):
                if not node.running():
                    raise RuntimeError(f"{node.name} exited while booting:\n{node.log_text()}")
                if _port_open(node.mqtt_port):
                    waiting.remove(node)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(node.name for node in waiting)
                raise RuntimeError(f"timed out after {timeout}s booting {names}")
            time.sleep(0.1)

    def start(self) -> RabbitCluster:
        self._epmd = subprocess.Popen(
            [EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._boot(self.nodes[0])
        self._await(self.nodes[:1])
        for node in self.nodes[1:]:
            self._boot(node)
        self._await(self.nodes[1:])
        return self

    def kill9(self, index: int) -> None:
        """SIGKILL the node's whole process group, as a host that dies."""
        node = self.nodes[index]
        assert node.process is not None
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait()
        # The VM may outlive the script that started it by a moment: a restart
        # before its listeners close would see the dead node's ports as ready.
        deadline = time.monotonic() + 30
        while _port_open(node.mqtt_port) or _port_open(node.amqp_port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} still listens after SIGKILL")
            time.sleep(0.05)

    def restart(self, index: int) -> None:
        node = self.nodes[index]
        self._boot(node)
        self._await([node])

    def stop(self) -> None:
        for node in self.nodes:
            if node.running():
                assert node.process is not None
                os.killpg(node.process.pid, signal.SIGTERM)
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()
        if self._epmd is not None:
            self._epmd.terminate()
            self._epmd.wait()


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    if not available():
        pytest.fail("rabbitmq-server is not installed: run `make test` (tools/ensure-packages)")
    with tempfile.TemporaryDirectory(prefix="rabbit-cluster-") as workdir:
        cluster = RabbitCluster(Path(workdir)).start()
        try:
            yield cluster
        finally:
            cluster.stop()
