"""sd_notify client and watchdog against a real AF_UNIX datagram socket playing systemd."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.interfaces import (
    DeviceState,
    DeviceStatus,
    GatewayView,
    StoreStats,
    UplinkState,
    UplinkStatus,
)
from gateway.settings import Settings
from gateway.systemd_notify import Notifier, status_line, watchdog
from tests.support.common import wait_until

# Ten pings a second keeps the tests short. The stall is twice the lag bound, so the
# tick after it is late whatever the machine's load; the other ticks are not asserted
# to be on time, since a busy machine may delay one.
WATCHDOG_USEC = 200_000
MAX_LAG = 1.0


class Manager:
    """The service manager's end of the notification socket."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(data.decode())

    def notifier(self, **extra: str) -> Notifier:
        return Notifier.from_environment({"NOTIFY_SOCKET": self.name, **extra})


def _bound(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    path = tmp_path / "notify"
    with _bound(str(path)) as sock:
        yield Manager(sock, str(path))


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.notify(ready=True, status="up")
    assert not notifier.ping_watchdog()
    assert not notifier.notify(stopping=True)
    notifier.close()


def test_state_changes_arrive_as_one_datagram_each(manager: Manager) -> None:
    notifier = manager.notifier()
    assert notifier.enabled
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.notify(ready=True)
    assert notifier.notify(status="depth 3\nlast seq 7")
    assert notifier.notify(reloading=True)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.notify(ready=True, status="reloaded")
    assert notifier.ping_watchdog()
    assert notifier.notify(stopping=True)
    assert not notifier.notify()
    notifier.close()

    messages = manager.drain()
    reloading = messages[2].split("\n")
    assert reloading[0] == "RELOADING=1"
    key, _, usec = reloading[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after
    assert messages[:2] == ["READY=1", "STATUS=depth 3 last seq 7"]
    assert messages[3:] == ["READY=1\nSTATUS=reloaded", "WATCHDOG=1", "STOPPING=1"]


def test_abstract_socket_name_starting_with_at_sign() -> None:
    name = f"edge-gateway-test-{uuid.uuid4().hex}"
    with _bound(b"\0" + name.encode()) as sock:
        manager = Manager(sock, "@" + name)
        notifier = manager.notifier()
        assert notifier.notify(ready=True)
        notifier.close()
        assert manager.drain() == ["READY=1"]


def test_unsupported_address_disables_notifications(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert not notifier.notify(ready=True)
    assert "not a socket path" in caplog.text


def test_watchdog_belongs_to_the_pid_systemd_named(manager: Manager) -> None:
    mine = manager.notifier(WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid()))
    assert mine.watchdog_interval == 15.0
    inherited = manager.notifier(WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid() + 1))
    assert inherited.watchdog_interval is None
    assert manager.notifier(WATCHDOG_USEC="0").watchdog_interval is None
    assert manager.notifier(WATCHDOG_USEC="soon").watchdog_interval is None


def test_a_vanished_manager_is_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone"
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(path)})
    caplog.set_level(logging.INFO, logger="gateway.systemd_notify")
    for _ in range(5):
        assert not notifier.ping_watchdog()
    assert notifier.failures == 5
    assert caplog.text.count("cannot notify the service manager") == 1

    with _bound(str(path)) as sock:
        assert notifier.ping_watchdog()
        assert Manager(sock, str(path)).drain() == ["WATCHDOG=1"]
    assert notifier.failures == 0
    assert "reachable again after 5 failed notifications" in caplog.text
    notifier.close()


@dataclass
class HealthProbe:
    """A ``healthy()`` that marks each call in the message stream, so order tells what happened."""

    notifier: Notifier
    reason: str | None = None
    answers: list[str | None] = field(default_factory=list)

    def __call__(self) -> str | None:
        self.answers.append(self.reason)
        self.notifier.send(f"X-CHECK={len(self.answers)}")
        return self.reason

    def checks_in(self, messages: list[str]) -> int:
        return sum(1 for m in messages if m.startswith("X-CHECK="))


def _expected_stream(answers: list[str | None], ping: list[bool]) -> list[str]:
    out: list[str] = []
    for n, (answer, on_time) in enumerate(zip(answers, ping, strict=True), start=1):
        out.append(f"X-CHECK={n}")
        if answer is None and on_time:
            out.append("WATCHDOG=1")
    return out


def _through_check(messages: list[str], n: int) -> list[str]:
    """The stream up to what check ``n`` caused (its ping, if any), without later checks."""
    end = messages.index(f"X-CHECK={n + 1}") if f"X-CHECK={n + 1}" in messages else len(messages)
    return messages[:end]


async def test_watchdog_pings_only_while_healthy(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = manager.notifier(WATCHDOG_USEC=str(WATCHDOG_USEC))
    probe = HealthProbe(notifier)
    # No lag bound: this test is about health alone.
    task = asyncio.create_task(watchdog(notifier, probe, max_lag=math.inf))
    try:
        await wait_until(lambda: probe.checks_in(manager.drain()) >= 2, message="healthy checks")
        probe.reason = "store writer made no progress"
        wedged_from = len(probe.answers) + 1
        await wait_until(lambda: len(probe.answers) >= wedged_from + 3, message="wedged checks")
        probe.reason = None
        healed_at = len(probe.answers) + 1
        await wait_until(
            lambda: probe.checks_in(manager.drain()) >= healed_at + 2, message="healed checks"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()

    last = healed_at + 1
    stream = _through_check(manager.drain(), last)
    answers = probe.answers[:last]
    assert answers[wedged_from - 1] == "store writer made no progress"
    assert answers[-1] is None
    assert stream == _expected_stream(answers, [True] * last)
    assert caplog.text.count("withholding watchdog pings") == 1
    assert "store writer made no progress" in caplog.text
    assert "watchdog pings resumed after" in caplog.text


async def test_a_stalled_event_loop_withholds_the_late_ping(manager: Manager) -> None:
    notifier = manager.notifier(WATCHDOG_USEC=str(WATCHDOG_USEC))
    probe = HealthProbe(notifier)
    task = asyncio.create_task(watchdog(notifier, probe, max_lag=MAX_LAG))
    try:
        await wait_until(lambda: probe.checks_in(manager.drain()) >= 2, message="first pings")
        stalled_after = len(probe.answers)
        notifier.send("X-STALL=1")
        # Block the event loop the way a blocking call on it would.
        time.sleep(MAX_LAG * 2)  # noqa: ASYNC251
        await wait_until(
            lambda: "WATCHDOG=1" in _after_stall(manager.drain()), message="pings after the stall"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()

    messages = manager.drain()
    before, after = messages[: messages.index("X-STALL=1")], _after_stall(messages)
    assert "WATCHDOG=1" in before
    # The late tick checked health and sent nothing: the next message is the next check.
    assert after[:2] == [f"X-CHECK={stalled_after + 1}", f"X-CHECK={stalled_after + 2}"]
    assert "WATCHDOG=1" in after
    assert all(answer is None for answer in probe.answers)


def _after_stall(messages: list[str]) -> list[str]:
    return messages[messages.index("X-STALL=1") + 1 :] if "X-STALL=1" in messages else []


async def test_watchdog_returns_when_systemd_set_none(manager: Manager) -> None:
    notifier = manager.notifier()
    probe = HealthProbe(notifier)
    async with asyncio.timeout(5):
        await watchdog(notifier, probe)
    assert probe.answers == []


@dataclass
class FakeLog:
    """Only ``stats()`` is read by the status line."""

    depth: int
    last_seq: int
    oldest_unsent_ts: float | None
    degraded: str | None = None

    def stats(self) -> StoreStats:
        return StoreStats(
            depth=self.depth,
            bytes=0,
            last_seq=self.last_seq,
            dropped=0,
            dead_letters=0,
            oldest_unsent_ts=self.oldest_unsent_ts,
            degraded=self.degraded,
            free_bytes=None,
            commits=0,
            committed_readings=0,
            commit_seconds=0.0,
        )


@dataclass
class Part:
    status: DeviceStatus | UplinkStatus


def _view(
    log: FakeLog, devices: dict[str, DeviceState], uplinks: dict[str, UplinkState]
) -> GatewayView:
    return GatewayView(
        settings=Settings(),
        log=log,  # type: ignore[arg-type]
        devices={k: Part(DeviceStatus(state=v)) for k, v in devices.items()},  # type: ignore[misc]
        uplinks={k: Part(UplinkStatus(state=v)) for k, v in uplinks.items()},  # type: ignore[misc]
        started=0.0,
    )


def test_status_line_sums_up_store_uplinks_and_devices() -> None:
    busy = _view(
        FakeLog(depth=120, last_seq=1042, oldest_unsent_ts=1000.0, degraded="disk nearly full"),
        {"thermo-1": "open", "gps": "waiting", "door": "open"},
        {"mqtt": "backoff"},
    )
    assert status_line(busy, now=1095.4) == (
        "depth 120, last seq 1042, oldest unsent 95 s; store degraded: disk nearly full; "
        "mqtt backoff; devices 2/3 open"
    )
    idle = _view(FakeLog(depth=0, last_seq=7, oldest_unsent_ts=None), {}, {"mqtt": "connected"})
    assert status_line(idle) == "depth 0, last seq 7; mqtt connected"
