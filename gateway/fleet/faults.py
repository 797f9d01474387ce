"""The faults a fleet run injects on a schedule: ``kill9:FRACTION@T`` and
``blackhole:FRACTION@T+D`` (seconds after every gateway has started)."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Literal

from gateway.errors import GatewayError

FaultKind = Literal["kill9", "blackhole"]

_SPEC = re.compile(
    r"^(?P<kind>kill9|blackhole):(?P<fraction>[0-9.]+)@(?P<at>[0-9.]+)(?:\+(?P<lasting>[0-9.]+))?$"
)


class FleetUsageError(GatewayError):
    """A fault or the broker given on the command line does not parse."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    fraction: float  # of the gateways, at least one of them
    at: float  # seconds after the whole fleet started
    lasting: float = 0.0  # blackhole: how long the links stay dark

    def pick(self, ids: list[str], rng: random.Random) -> list[str]:
        """The gateways it hits: ``fraction`` of ``ids`` rounded up, chosen by ``rng``."""
        count = min(len(ids), max(1, math.ceil(self.fraction * len(ids))))
        return sorted(rng.sample(ids, count))


def parse_fault(text: str) -> Fault:
    """``kill9:0.1@30`` or ``blackhole:0.2@60+30``; a bad one raises ``FleetUsageError``."""
    match = _SPEC.match(text.strip())
    if match is None:
        raise FleetUsageError(
            f"bad fault {text!r}: write kill9:FRACTION@SECONDS or "
            "blackhole:FRACTION@SECONDS+SECONDS (e.g. kill9:0.1@30, blackhole:0.2@60+30)"
        )
    try:
        fraction = float(match["fraction"])
        at = float(match["at"])
        lasting = float(match["lasting"] or 0.0)
    except ValueError:
        raise FleetUsageError(f"bad fault {text!r}: its numbers do not parse") from None
    if not 0 < fraction <= 1:
        raise FleetUsageError(f"bad fault {text!r}: the fraction must be in (0, 1]")
    if match["kind"] == "blackhole" and lasting <= 0:
        raise FleetUsageError(f"bad fault {text!r}: a blackhole needs +SECONDS it lasts")
    if match["kind"] == "kill9" and match["lasting"] is not None:
        raise FleetUsageError(f"bad fault {text!r}: kill9 takes no duration")
    kind: FaultKind = "kill9" if match["kind"] == "kill9" else "blackhole"
    return Fault(kind, fraction, at, lasting)
