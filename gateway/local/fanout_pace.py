"""How far apart commits must be for the live stream's fan-out to fit its share of the loop.

Every commit sends a frame to every stream client: a sweep over the clients on the
event loop, whose cost depends on the machine (a few µs per client on an x86 server,
several times that on a Pi) and on how busy it is. The hub times each sweep, and the
store starts the commits of a steady flow at least ``spacing`` apart, so that sweeps
take at most ``SHARE`` of the loop on any machine: few clients get each reading as it
comes, many get a few readings per frame, and a slower or busier machine gets fewer,
larger frames instead of a saturated loop.
"""

from __future__ import annotations

# The share of the event loop that sweeps may take under a steady flow. At 1,000
# readings/s to 100 clients on 2 cores (benchmarks/fanout.py, clients on the same
# machine), sweeps cost ≈ 8 µs per client, so this spaces commits ≈ 3.2 ms apart. In
# alternating runs: p99 5.5-6.1 ms here against 6.9-7.1 ms with commits 4 ms apart
# (11.6 against 14.4 ms in a round where the machine was slow); a share
# of 0.35 (2.4 ms) loaded the client processes to 50-66% of a core and gave 8.9-11.2 ms.
SHARE = 0.25
# The cost of one client's frame before any sweep has been timed: a slow gateway's.
INITIAL_COST = 50e-6
# Each timed sweep moves the estimate this fraction of the way towards itself...
SMOOTHING = 1 / 16
# ... counting at most this multiple of the estimate, so that one sweep stretched by a
# pause (a collection, the process descheduled) cannot space commits out for long.
OUTLIER = 2.0


class FanoutPace:
    """A running estimate of what a sweep costs per client, and the spacing it implies."""

    def __init__(self) -> None:
        self.cost_per_client = INITIAL_COST

    def timed(self, seconds: float, clients: int) -> None:
        """One sweep over ``clients`` clients took ``seconds`` of the loop."""
        if clients <= 0:
            return
        sample = min(seconds / clients, OUTLIER * self.cost_per_client)
        self.cost_per_client += (sample - self.cost_per_client) * SMOOTHING

    def spacing(self, clients: int) -> float | None:
        """Seconds between the starts of commits; None when nobody watches."""
        if clients <= 0:
            return None
        return clients * self.cost_per_client / SHARE
