"""The project's one exception root and the subclasses that carry data.

Callers catch the narrowest class they can handle; the CLI turns any
``GatewayError`` that escapes into one line on stderr and an exit code.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Root of every error this project raises on purpose."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One bad key: where it is (``devices[1].baudrate``) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(GatewayError):
    """The configuration file is unreadable or has bad keys; lists every problem."""

    exit_code = 2

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class StoreError(GatewayError):
    """The reading log failed in a way the caller must know about."""


class StoreFullError(StoreError):
    """The log is at its bound (or the disk is full) and the policy refused new readings."""


class StoreClosedError(StoreError):
    """The store was closed; nothing more can be appended."""


class DriverError(GatewayError):
    """A device driver failed; carries the device id."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"{device}: {message}")


class UplinkError(GatewayError):
    """An uplink failed; carries the uplink name."""

    def __init__(self, uplink: str, message: str) -> None:
        self.uplink = uplink
        super().__init__(f"{uplink}: {message}")
