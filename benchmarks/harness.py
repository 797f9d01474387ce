"""Process plumbing shared by the benchmarks.

A private mosquitto on a free port (the tests' own, from tests/support/), the gateway
as a subprocess with a generated configuration, pseudo-terminals fed by a paced line
writer, helper processes that report progress as JSON lines, and process sampling
(CPU, RSS, bytes written).
Everything binds to 127.0.0.1 and is stopped by whoever started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w

from tests.support.common import free_port
from tests.support.mosquitto import Mosquitto

TOKEN = "bench-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A benchmark could not run (a part failed to start, a deadline passed)."""


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE (inherited by children) up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def scratch_dir(prefix: str) -> Path:
    # /tmp is disk-backed here; a tmpfs would hide the bytes written to storage.
    return Path(tempfile.mkdtemp(prefix=f"edge-bench-{prefix}-"))


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# ---------------------------------------------------------------- process sampling


@dataclass(frozen=True, slots=True)
class ProcSnapshot:
    t: float  # time.monotonic()
    cpu_seconds: float  # utime + stime
    rss_bytes: int
    write_bytes: int  # bytes this process caused to be sent to storage


def snapshot(pid: int) -> ProcSnapshot:
    """CPU, RSS and bytes written, as /proc/PID/stat, statm and io give them."""
    t = time.monotonic()
    proc = psutil.Process(pid)
    with proc.oneshot():
        cpu = proc.cpu_times()
        rss = proc.memory_info().rss
        write_bytes = proc.io_counters().write_bytes
    return ProcSnapshot(t, cpu.user + cpu.system, rss, write_bytes)


def memory_breakdown(pid: int) -> dict[str, int]:
    """RSS split by kind (anonymous, file-backed, shared memory) from smaps_rollup, bytes."""
    # Read by hand: psutil takes only USS, PSS and swap from this file, not the lines
    # that split RSS by kind (Anonymous, Shmem, clean and dirty pages).
    out: dict[str, int] = {}
    wanted = {"Rss", "Anonymous", "Shared_Clean", "Private_Clean", "Private_Dirty", "Shmem"}
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in wanted:
                    out[key] = int(rest.split()[0]) * 1024
    except FileNotFoundError:
        pass
    return out


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (utime + stime) of each thread of ``pid``, by thread id."""
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def thread_percent(
    pid: int, a: dict[int, float], b: dict[int, float], seconds: float
) -> dict[str, float]:
    """Per-thread CPU between two ``thread_cpu`` readings, as % of one core.

    The main thread (the event loop) is named; the others (the store's writer,
    readers, the MQTT client's thread, executors) are listed busiest first.
    """
    busy = {tid: 100.0 * (b[tid] - a.get(tid, 0.0)) / seconds for tid in b}
    out = {"main": round(busy.pop(pid, 0.0), 1)}
    for k, (_, pct) in enumerate(sorted(busy.items(), key=lambda kv: -kv[1]), 1):
        if pct >= 0.5:
            out[f"thread-{k}"] = round(pct, 1)
    return out


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    times = psutil.cpu_times()
    # Guest time is already counted in user, so it is left out of the total.
    total = sum(times[:8])
    return total - times.idle - times.iowait, total


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_percent(a: ProcSnapshot, b: ProcSnapshot) -> float:
    """CPU used between two snapshots, as a percentage of one core."""
    return 100.0 * (b.cpu_seconds - a.cpu_seconds) / (b.t - a.t)


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM (a clean stop), then SIGKILL after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class RssSampler:
    """Samples a process's RSS on a thread; ``max_bytes`` and the series afterwards."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                s = snapshot(self.pid)
            except psutil.NoSuchProcess:
                return
            self.samples.append((s.t, s.rss_bytes))
            self._stop.wait(self.interval)

    @property
    def max_bytes(self) -> int:
        return max((r for _, r in self.samples), default=0)


# ---------------------------------------------------------------- child processes


class Child:
    """A helper subprocess that prints JSON objects, one a line, on stdout.

    A reader thread keeps the latest of each ``event`` so callers can poll
    progress without blocking; stderr goes to a log file for diagnosis.
    """

    def __init__(
        self, name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=ROOT,
        )
        log.close()
        self.latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"{name}-out", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            with self._lock:
                self.latest[obj.get("event", "")] = obj

    def get(self, event: str) -> dict[str, Any] | None:
        with self._lock:
            return self.latest.get(event)

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        def seen() -> bool:
            if self.proc.poll() is not None and self.get(event) is None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            return self.get(event) is not None

        wait_for(seen, timeout, f"{self.name}: {event}")
        result = self.get(event)
        assert result is not None
        return result

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        terminate(self.proc, timeout)
        self._reader.join(timeout=5)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        return self.proc.returncode

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- broker


@contextlib.contextmanager
def private_broker(work: Path, extra_config: Sequence[str] = ()) -> Iterator[Mosquitto]:
    """The tests' mosquitto in ``work``, with no limit on queued or in-flight QoS 1 messages.

    A slow subscriber must not lose QoS 1 messages: that would read as lost readings
    rather than as a slow consumer. ``extra_config``: more lines of mosquitto.conf.
    """
    mosquitto = Mosquitto(
        work / "mosquitto",
        persistence=False,
        extra_config=["max_inflight_messages 0", *extra_config],
    )
    try:
        mosquitto.start()
    except pytest.fail.Exception as exc:  # how the tests' helpers report; a benchmark's is this
        raise BenchError(str(exc)) from None
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


# ---------------------------------------------------------------- pseudo-terminals


class PtyLink:
    """A pseudo-terminal whose slave is symlinked at ``path``; we hold the master.

    The slave is kept open in raw mode so that nothing is echoed back into a
    buffer no one reads, and writes before the reader opens the port are kept.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        path.unlink(missing_ok=True)
        path.symlink_to(os.ttyname(self._slave))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class PacedWriter:
    """Writes counter lines ``n=<i>`` at a fixed rate on a thread, recording when.

    ``written[i]`` is ``time.time()`` just before line ``i`` is written; the
    subscriber records ``time.time()`` on arrival, on the same clock.
    """

    def __init__(self, link: PtyLink, rate: float, duration: float, first: int = 1) -> None:
        self.link = link
        self.rate = rate
        self.duration = duration
        self.first = first
        self.written: dict[int, float] = {}
        self.behind_max = 0.0  # worst lateness of a write against its schedule
        self._thread = threading.Thread(target=self._run, name="paced-writer", daemon=True)

    def start(self) -> PacedWriter:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        period = 1.0 / self.rate
        count = int(self.rate * self.duration)
        start = time.monotonic()
        for k in range(count):
            due = start + k * period
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                self.behind_max = max(self.behind_max, now - due)
            n = self.first + k
            self.written[n] = time.time()
            self.link.write(b"n=%d\n" % n)


# ---------------------------------------------------------------- the gateway


@dataclass
class GatewayConfig:
    work: Path
    devices: list[tuple[str, Path]]
    mqtt_url: str | None
    durability: str = "full"
    gateway_id: str = "gw-bench"
    local_port: int = field(default_factory=free_port)
    max_clients: int = 100
    # Extra settings for the store and every device.
    store_settings: dict[str, object] = field(default_factory=dict)
    device_settings: dict[str, object] = field(default_factory=dict)
    # Options of ``benchmarks.lever_run`` (levers without a configuration key); empty:
    # the gateway runs as ``python -m gateway``.
    levers: tuple[str, ...] = ()
    # Settings of one device, by id, over the others.
    per_device: dict[str, dict[str, object]] = field(default_factory=dict)
    # Keys of an [[uplinks]] table of type "websocket" (named "websocket"); None: none.
    websocket: dict[str, object] | None = None

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def path(self) -> Path:
        return self.work / "gateway.toml"

    def write(self) -> Path:
        config: dict[str, object] = {
            "gateway": {
                "id": self.gateway_id,
                "data_dir": str(self.data_dir),
                "log_level": "WARNING",
            },
            "store": {"durability": self.durability, **self.store_settings},
            "devices": [
                {
                    "id": device_id,
                    "driver": "serial_line",
                    "port": str(port),
                    "baudrate": 115200,
                    "format": "kv",
                    "reconnect_min": 0.05,
                    "reconnect_max": 0.5,
                    **self.device_settings,
                    **self.per_device.get(device_id, {}),
                }
                for device_id, port in self.devices
            ],
        }
        if self.mqtt_url:
            config["uplink"] = {
                "mqtt": {
                    "url": self.mqtt_url,
                    "topic_prefix": "edge",
                    "reconnect_min": 0.1,
                    "reconnect_max": 0.5,
                }
            }
        if self.websocket is not None:
            config["uplinks"] = [{"name": "websocket", "type": "websocket", **self.websocket}]
        config["local"] = {
            "listen": f"127.0.0.1:{self.local_port}",
            "token": TOKEN,
            "max_clients": self.max_clients,
            # Every client is on loopback: one address, and as many connections.
            "max_connections": self.max_clients + 16,
            "max_connections_per_address": self.max_clients + 16,
        }
        self.path.write_text(tomli_w.dumps(config), encoding="utf-8")
        return self.path


class Gateway:
    """The real gateway (``python -m gateway run -c FILE``) as a subprocess."""

    def __init__(self, config: GatewayConfig, profile: Path | None = None) -> None:
        self.config = config
        config.write()
        self.log_path = config.work / "gateway.log"
        argv = [sys.executable]
        if profile is not None:
            argv += ["-m", "cProfile", "-o", str(profile)]
        if config.levers:
            if "--uvloop" in config.levers:
                # uvloop's transports are not asyncio.Transport subclasses, which the local
                # server asserts of every connection: -O strips the asserts (and only them).
                argv.append("-O")
            argv += ["-m", "benchmarks.lever_run", *config.levers, "--"]
        else:
            argv += ["-m", "gateway"]
        argv += ["run", "-c", str(config.path)]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=log, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        log.close()
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.local_port}"

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _get(self, path: str) -> bytes:
        req = urllib.request.Request(
            self.base_url + path, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            body: bytes = resp.read()
            return body

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise BenchError(f"gateway exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                self._get("/healthz")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False
            return True

        wait_for(healthy, timeout, "gateway /healthz", interval=0.05)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self._get("/api/v1/status"))
        return body

    def metrics(self) -> dict[str, float]:
        """The /metrics samples, keyed by name with labels as written."""
        out: dict[str, float] = {}
        for line in self._get("/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def last_seq(self) -> int:
        return int(self.status()["store"]["last_seq"])

    def stop(self, timeout: float = 60.0) -> int:
        return terminate(self.proc, timeout)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- simulated devices


def start_counter(name: str, link: Path, log_dir: Path, rate: float) -> Child:
    """The product's counter simulator (``edge-gateway sim counter``) at ``rate`` lines/s."""
    argv = python_module("gateway", "sim", "counter", "--link", str(link), "--rate", str(rate))
    child = Child(name, argv, log_dir)
    wait_for(lambda: link.exists() or child.proc.poll() is not None, 20, f"{name} to create {link}")
    if child.proc.poll() is not None:
        raise BenchError(f"{name} exited with {child.proc.returncode}: {child.tail()}")
    return child


@contextlib.contextmanager
def counters(
    n: int, work: Path, rate: float
) -> Iterator[tuple[list[tuple[str, Path]], list[Child]]]:
    """``n`` counter devices; yields their (device id, link path) and their processes."""
    children: list[Child] = []
    devices: list[tuple[str, Path]] = []
    try:
        for i in range(1, n + 1):
            link = work / f"tty-counter-{i}"
            children.append(start_counter(f"counter-{i}", link, work, rate))
            devices.append((f"counter-{i}", link))
        yield devices, children
    finally:
        for child in children:
            child.stop(timeout=5)
