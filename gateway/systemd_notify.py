"""The service manager's notification protocol (sd_notify) and the watchdog that uses it.

systemd starts the gateway with ``Type=notify``: it waits for ``READY=1`` before it
calls the service started, shows the last ``STATUS=`` line in ``systemctl status``,
and with ``WatchdogSec=`` restarts the process when ``WATCHDOG=1`` pings stop. The
protocol is one datagram of ``KEY=value`` lines to the socket named in
``$NOTIFY_SOCKET``; speaking it directly keeps libsystemd out of the dependencies.
Outside systemd (tests, a shell, the demo) the variable is unset and every call is a
no-op, so the runtime can notify unconditionally.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from gateway.interfaces import GatewayView

log = logging.getLogger(__name__)


def _socket_address(value: str) -> str | bytes | None:
    """The address ``$NOTIFY_SOCKET`` names, or None for a kind this client does not speak."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        # A Linux abstract socket: its name starts with a NUL byte, not a path.
        return b"\0" + value[1:].encode()
    return None


class Notifier:
    """Sends state changes to the service manager; does nothing when none listens.

    Sending never blocks and never raises: the socket is non-blocking, and a message
    the manager cannot take is dropped and counted, because the gateway must keep
    running whatever happens to its supervisor's socket.
    """

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None
        self.failures = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for the service manager that started this process, if any."""
        if environ is None:
            environ = os.environ
        raw = environ.get("NOTIFY_SOCKET", "")
        address = _socket_address(raw) if raw else None
        if raw and address is None:
            log.warning(
                "NOTIFY_SOCKET=%s is not a socket path or abstract name; not notifying", raw
            )
        watchdog_usec: int | None = None
        # WATCHDOG_PID says whom the watchdog is meant for; a child that inherited
        # the environment must not ping on its parent's behalf.
        pid = environ.get("WATCHDOG_PID", "")
        if pid in ("", str(os.getpid())):
            usec = environ.get("WATCHDOG_USEC", "")
            if usec.isdigit() and int(usec) > 0:
                watchdog_usec = int(usec)
        return cls(address, watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the manager's timeout), or None without a watchdog."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one message; True when the manager got it."""
        if self._address is None:
            return False
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        try:
            self._socket.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            self.failures += 1
            # Once per outage, with the count when it ends: a dead socket must not
            # flood the journal with a line per watchdog ping.
            if self.failures == 1:
                log.warning("cannot notify the service manager: %s", exc)
            return False
        if self.failures:
            log.info("service manager reachable again after %d failed notifications", self.failures)
            self.failures = 0
        return True

    def notify(
        self,
        *,
        ready: bool = False,
        reloading: bool = False,
        stopping: bool = False,
        status: str | None = None,
    ) -> bool:
        """Report a state change in one message; True when the manager got it.

        ``reloading`` starts a reload and ``ready`` ends it (or ends startup);
        MONOTONIC_USEC goes with RELOADING=1 so systemd can tell reloads apart.
        """
        lines: list[str] = []
        if reloading:
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            lines += ["RELOADING=1", f"MONOTONIC_USEC={usec}"]
        if ready:
            lines.append("READY=1")
        if stopping:
            lines.append("STOPPING=1")
        if status is not None:
            # A newline would end the assignment and start a bogus one.
            lines.append("STATUS=" + " ".join(status.split()))
        return self.send(*lines) if lines else False

    def ping_watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def watchdog(
    notifier: Notifier,
    healthy: Callable[[], str | None],
    *,
    max_lag: float | None = None,
) -> None:
    """Ping the watchdog every half timeout while the loop runs on time and ``healthy()`` is None.

    This task waking up at all proves the event loop still runs; waking up late by more
    than ``max_lag`` (default: a quarter of the timeout) means something blocked it, and
    that tick's ping is withheld, which makes systemd restart the process. ``healthy``
    returns why the gateway is wedged (for example the store's writer thread stopped
    making progress), or None; it must only report what a restart can cure, never a
    degraded state such as a full disk or an unreachable broker. Returns at once when
    the service manager has no watchdog for this process; otherwise runs until cancelled.
    """
    period = notifier.watchdog_interval
    if period is None:
        return
    allowed_lag = period / 2 if max_lag is None else max_lag
    loop = asyncio.get_running_loop()
    withheld = 0
    due = loop.time()
    while True:
        lag = loop.time() - due
        reasons = [reason] if (reason := healthy()) is not None else []
        if lag > allowed_lag:
            reasons.append(f"event loop ran {lag:.1f} s late")
        if reasons:
            withheld += 1
            if withheld == 1:
                log.error(
                    "withholding watchdog pings, systemd will restart: %s", "; ".join(reasons)
                )
        else:
            if withheld:
                log.warning("watchdog pings resumed after %d withheld", withheld)
                withheld = 0
            notifier.ping_watchdog()
        due = loop.time() + period
        await asyncio.sleep(period)


def status_line(view: GatewayView, now: float | None = None) -> str:
    """One line for ``STATUS=``: what ``systemctl status`` shows beside the unit's state."""
    stats = view.log.stats()
    store = f"depth {stats.depth}, last seq {stats.last_seq}"
    if stats.depth and stats.oldest_unsent_ts is not None:
        age = (time.time() if now is None else now) - stats.oldest_unsent_ts
        store += f", oldest unsent {max(age, 0.0):.0f} s"
    parts = [store]
    if stats.degraded is not None:
        parts.append(f"store degraded: {stats.degraded}")
    parts.extend(f"{name} {uplink.status.state}" for name, uplink in view.uplinks.items())
    if view.devices:
        opened = sum(1 for d in view.devices.values() if d.status.state == "open")
        parts.append(f"devices {opened}/{len(view.devices)} open")
    return "; ".join(parts)
