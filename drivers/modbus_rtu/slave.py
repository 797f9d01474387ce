"""How one slave is doing: its state, what went wrong how often, and its backoff.

The driver of a ``modbus_rtu`` device keeps one ``SlaveStatus`` and hangs it on the
device's status (``DeviceStatus.detail``), so /api/v1/status shows it under the device
as ``"modbus"`` and /metrics as ``edge_gateway_device_modbus_*`` families.

States:

- ``ok``: its last poll got an answer to every request (also before the first poll);
- ``failing``: its last poll had failures (exception responses, or a first poll with no
  answer, retried at the normal interval);
- ``backoff``: several polls in a row got no answer; it is asked again after a growing
  wait;
- ``dead``: that wait has reached ``retry_max``; it is asked once per ``retry_max``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from drivers.modbus_rtu.bus import Failure
from gateway.interfaces import DeviceFigure

SlaveState = Literal["ok", "failing", "backoff", "dead"]
STATES: tuple[SlaveState, ...] = ("ok", "failing", "backoff", "dead")

# Failure kinds (bus.Failure.kind) and the counter each has in the status and /metrics.
COUNTERS = {
    "timeout": "timeouts",
    "crc error": "crc_errors",
    "bad frame": "bad_frames",
    "exception": "exceptions",
    "port": "port_errors",
}
_HELP = {
    "timeouts": "Modbus requests the slave did not answer within its timeout.",
    "crc_errors": "Modbus answers heard with a bad CRC (noise, a corrupted or cut frame).",
    "bad_frames": "Modbus frames with a good CRC that were no answer to the request.",
    "port_errors": "Modbus requests that failed because the port could not be used.",
}


@dataclass(slots=True)
class SlaveStatus:
    slave_id: int
    state: SlaveState = "ok"
    polls: int = 0
    # Failures by kind ("timeout", "crc error", "bad frame", "exception", "port").
    failures: Counter[str] = field(default_factory=Counter)
    # Exception responses by exception code.
    exception_codes: Counter[int] = field(default_factory=Counter)
    last_success: float | None = None  # epoch seconds of the last answered request
    backoff: float = 0.0  # seconds before the next poll while backing off, else 0
    silent_polls: int = 0  # polls in a row that got no answer

    @property
    def name(self) -> str:
        return "modbus"

    def failed(self, failure: Failure) -> None:
        self.failures[failure.kind] += 1
        if failure.code is not None:
            self.exception_codes[failure.code] += 1

    def answered(self, ts: float) -> None:
        self.last_success = ts

    def poll_done(self, *, clean: bool) -> None:
        """A poll in which the slave answered (``clean``: every request)."""
        self.polls += 1
        self.silent_polls = 0
        self.backoff = 0.0
        self.state = "ok" if clean else "failing"

    def poll_unanswered(self, backoff: float, ceiling: float) -> None:
        """A poll that ended without an answer; the next waits ``backoff`` seconds."""
        self.polls += 1
        self.silent_polls += 1
        self.backoff = backoff
        if self.silent_polls == 1:
            self.state = "failing"
        elif backoff >= ceiling:
            self.state = "dead"
        else:
            self.state = "backoff"

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"slave_id": self.slave_id, "state": self.state}
        body["polls"] = self.polls
        for kind, name in COUNTERS.items():
            body[name] = self.failures[kind]
        body["exception_codes"] = {str(c): n for c, n in sorted(self.exception_codes.items())}
        body["last_success"] = self.last_success
        body["backoff"] = self.backoff
        return body

    def figures(self) -> list[DeviceFigure]:
        slave = (("slave", str(self.slave_id)),)
        out = [
            DeviceFigure(
                "modbus_slave_state",
                "gauge",
                "1 for the Modbus slave's state (ok, failing, backoff, dead), 0 for the others.",
                int(state == self.state),
                (*slave, ("state", state)),
            )
            for state in STATES
        ]
        out.append(
            DeviceFigure(
                "modbus_polls_total", "counter", "Polls of the Modbus slave.", self.polls, slave
            )
        )
        for kind, name in COUNTERS.items():
            if kind != "exception":
                out.append(
                    DeviceFigure(
                        f"modbus_{name}_total", "counter", _HELP[name], self.failures[kind], slave
                    )
                )
        out += [
            DeviceFigure(
                "modbus_exceptions_total",
                "counter",
                "Modbus exception responses of the slave, by exception code.",
                n,
                (*slave, ("code", str(code))),
            )
            for code, n in sorted(self.exception_codes.items())
        ]
        out.append(
            DeviceFigure(
                "modbus_backoff_seconds",
                "gauge",
                "How long the Modbus slave's next poll waits while it does not answer "
                "(0: not backing off).",
                self.backoff,
                slave,
            )
        )
        if self.last_success is not None:
            out.append(
                DeviceFigure(
                    "modbus_last_success_timestamp_seconds",
                    "gauge",
                    "When the Modbus slave last answered a request.",
                    self.last_success,
                    slave,
                )
            )
        return out
