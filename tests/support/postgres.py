"""A private PostgreSQL server for tests, from Debian's packages (postgresql-15).

``Postgres`` runs ``initdb`` into a fresh temporary directory and then the
``postgres`` server itself on a free 127.0.0.1 port, with its unix socket in
that directory too, so it shares nothing with a system cluster. Running as
root, both run as the ``postgres`` user (initdb refuses root), which owns the
directory; otherwise as the current user. Authentication is ``trust`` on
loopback only. ``stop()`` ends the server and removes the directory.

``initdb`` takes seconds, so one server serves a whole test session, started by
the first test that asks for it and stopped at the end; each test gets a
database of its own (``postgres_url``), dropped after it.

Fixtures:

- ``postgres_server``: the session's started server.
- ``postgres_url``: ``postgresql://…`` of a fresh, empty database for one test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.common import free_port, wait_until_sync

# Debian installs the server's programs outside PATH, one directory per major version.
_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_SUPERUSER = "postgres"


def server_bin_dir() -> Path:
    """The newest installed server's bin directory (tools/ensure-packages installs one)."""
    found = sorted(glob.glob(_BIN_GLOB), key=lambda p: int(Path(p).parent.name))
    if not found:
        pytest.fail("no PostgreSQL server under /usr/lib/postgresql (Debian's postgresql-15)")
    return Path(found[-1])


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: PostgreSQL will not run as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    pytest.fail("running as root, and neither a postgres nor a nobody user exists")


class Postgres:
    """One PostgreSQL server on 127.0.0.1:``port``, in a directory of its own."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.bin = server_bin_dir()
        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root, and the server may run
        # as another user.
        self.root = Path(tempfile.mkdtemp(prefix="edge-gateway-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self._user = _run_as()
        if self._user is not None:
            os.chown(self.root, *self._user)
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.Popen[bytes]:
        user = self._user
        # The child keeps its own copy of the log's descriptor.
        with self.log_path.open("ab") as log_file:
            return subprocess.Popen(
                args,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                user=None if user is None else user[0],
                group=None if user is None else user[1],
                extra_groups=None if user is None else [],
                cwd=self.root,
            )

    def start(self) -> None:
        initdb = self._run(
            str(self.bin / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            _SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        if initdb.wait(timeout=120) != 0:
            pytest.fail(f"initdb failed:\n{self.log()}")
        # fsync off: the tests kill clients, never this server, so nothing is lost.
        self._process = self._run(
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            str(self.root),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        )
        wait_until_sync(self._accepting, timeout=60, message=f"postgres on port {self.port}")

    def _accepting(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            pytest.fail(f"postgres exited at start:\n{self.log()}")
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                pass
        except OSError:
            return False
        # The port opens before recovery ends; pg_isready says when it takes queries.
        ready = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"],
            check=False,
        )
        return ready.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql; its output, unaligned and without headers."""
        command = [str(self.bin / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        result = subprocess.run(
            [*command, "-d", self.url(database), "-c", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"psql {sql!r} failed: {result.stderr}")
        return result.stdout

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: Postgres, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t{abs(hash(request.node.nodeid)) % 10**12}"
    postgres_server.psql(f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    postgres_server.psql(f"DROP DATABASE {name} WITH (FORCE)")
