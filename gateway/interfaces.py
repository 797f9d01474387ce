"""The seams between the parts: what a driver feeds, what an uplink reads.

Drivers push samples into a ``SampleSink``; the store commits them and tells its
listeners; uplinks and the local server read the log through ``ReadingLog``.
Each part depends on these protocols, not on the others' classes, so each can be
tested alone against a real store or a small fake.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from gateway.metrics import Histogram
from gateway.reading import DeadLetter, Sample, StoredReading
from gateway.settings import Settings


class SampleSink(Protocol):
    """Where a driver puts what it read. Neither put blocks nor raises for load.

    A sink that cannot keep up says so with ``congested``; a driver whose input can
    wait (a serial port) stops reading until ``wait_for_room`` returns, so the
    device waits instead of the sink dropping what was read.
    """

    def put_samples(self, samples: Sequence[Sample]) -> None: ...

    def put_dead_letter(self, dead_letter: DeadLetter) -> None: ...

    @property
    def congested(self) -> bool:
        """True while the sink holds more than it wants to; check after a put."""

    @property
    def paced(self) -> bool:
        """True while readings may wait a few milliseconds to share a read and a commit.

        False while someone watches the live stream: then a driver reads every reading as
        it comes, and the store spaces commits only by the stream's fan-out pace.
        """

    async def wait_for_room(self) -> None:
        """Return once the sink is no longer congested (at once if it is not)."""


CommitListener = Callable[[Sequence[StoredReading]], None]


@dataclass(frozen=True, slots=True)
class StoreStats:
    depth: int  # committed readings not yet acknowledged by every consumer
    bytes: int  # size of the database files on disk
    last_seq: int
    dropped: int  # readings dropped by bounds, overflow policy, a full disk or a damaged db
    dead_letters: int
    oldest_unsent_ts: float | None
    degraded: str | None  # why the store is degraded (disk full, …), else None
    free_bytes: int | None  # free space on the log's filesystem, as last measured
    commits: int
    committed_readings: int
    commit_seconds: float  # total time spent in commits
    dead_letters_lost: int = 0  # dead letters counted but whose raw bytes were lost
    moved_aside: int = 0  # damaged databases moved aside since the store opened
    moved_aside_at: float | None = None  # when the last one was (epoch seconds)
    moved_aside_reason: str | None = None  # what SQLite or the integrity check said
    integrity_checks: int = 0  # background integrity checks run to the end


class ReadingLog(Protocol):
    """The store as its consumers see it (uplinks, local server, CLI)."""

    @property
    def last_seq(self) -> int: ...

    @property
    def paced(self) -> bool:
        """True while reads and commits are paced (no live stream client watches)."""

    def set_watched(self, spacing: float | None) -> None:
        """None while nobody watches the live stream; else nothing is paced, and the
        commits of a steady flow start at least ``spacing`` seconds apart (the stream's
        fan-out pace)."""

    def add_listener(self, listener: CommitListener) -> None:
        """Call ``listener`` on the event loop with every committed batch, in seq order."""

    def remove_listener(self, listener: CommitListener) -> None: ...

    async def wait_beyond(self, seq: int) -> int:
        """Return ``last_seq`` as soon as it is greater than ``seq``."""

    async def read_after(
        self, seq: int, limit: int, device_glob: str | None = None
    ) -> list[StoredReading]:
        """Up to ``limit`` stored readings with seq > ``seq``, ascending."""

    async def register_consumer(
        self,
        name: str,
        *,
        start_now: bool = False,
        start_at: int = 0,
        best_effort: bool = False,
    ) -> int:
        """Create the durable cursor ``name`` if new (at the last seq with ``start_now``,
        else at ``start_at``); return its acknowledged seq. ``best_effort``: retention
        does not wait for it."""

    async def read_devices_after(
        self, seq: int, limit: int, devices: Sequence[str]
    ) -> list[StoredReading]:
        """Up to ``limit`` readings of ``devices`` (exact ids) with seq > ``seq``."""

    async def oldest_seq(self) -> int | None:
        """The lowest seq still in the log (None when it holds no reading)."""

    async def ack(self, name: str, seq: int) -> None:
        """Durably advance cursor ``name`` to ``seq`` (never moves it back)."""

    def stats(self) -> StoreStats: ...


# The states /api/v1/status and /metrics show, spelled as they are there; as Literals so
# that every assignment and comparison is checked against them.
DeviceState = Literal["starting", "open", "waiting", "stopped"]
UplinkState = Literal["starting", "connecting", "connected", "backoff", "stopped"]


@dataclass(frozen=True, slots=True)
class DeviceFigure:
    """One number a driver adds to /metrics for its device:
    ``edge_gateway_device_{name}{device="…", labels…}``."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class DeviceDetail(Protocol):
    """What a driver shows of a device beyond the common fields of ``DeviceStatus`` (a
    Modbus slave's counters): under the device in /api/v1/status, and in /metrics."""

    @property
    def name(self) -> str:
        """Its key under the device in /api/v1/status."""

    def as_json(self) -> dict[str, object]: ...

    def figures(self) -> list[DeviceFigure]: ...


@dataclass(slots=True)
class DeviceStatus:
    """Live state of one device, read by the status API and /metrics."""

    state: DeviceState = "starting"
    readings: int = 0
    errors: int = 0  # dead letters and read errors
    reconnects: int = 0
    pauses: int = 0  # times reading stopped because the sink was congested
    refused_names: int = 0  # samples whose sensor name was refused (gateway.ingest)
    last_reading_ts: float | None = None
    last_error: str | None = None
    detail: DeviceDetail | None = None


class Driver(Protocol):
    device_id: str
    status: DeviceStatus

    async def run(self) -> None:
        """Read the device until cancelled; device faults are handled, never raised."""


@dataclass(slots=True)
class UplinkStatus:
    state: UplinkState = "starting"
    acked_seq: int = 0
    in_flight: int = 0
    published_messages: int = 0
    published_readings: int = 0
    errors: int = 0
    refused: int = 0  # readings the peer refused for good (sent to dead letters)
    # Readings deleted from the log (bounds, or retention past a best-effort uplink)
    # before this uplink sent them, counted as the seqs it found gone.
    lost: int = 0
    resent: int = 0  # readings sent again by the `resend` command
    last_error: str | None = None
    connected_since: float | None = None
    disconnected_since: float | None = None
    # Seconds from a message's first publish to its successful PUBACK.
    publish_latency: Histogram = field(default_factory=Histogram)


class Uplink(Protocol):
    name: str
    status: UplinkStatus

    async def run(self) -> None:
        """Deliver readings after the durable cursor until cancelled."""


@runtime_checkable
class Resender(Protocol):
    """An uplink that can deliver a seq range of the log again (the `resend` command)."""

    async def resend(self, first: int, last: int) -> int:
        """Send the readings it carries with ``first <= seq <= last`` still in the log,
        once more, without moving its cursor; return how many once acknowledged."""


@dataclass(slots=True)
class CommandStatus:
    """Counters of the command router, read by the status API and /metrics."""

    # Requests executed, by command and by outcome ("ok" or "failed").
    executed: dict[tuple[str, str], int] = field(default_factory=dict)
    # Requests answered without running, by reason ("not_allowed", "bad_json", ...).
    refused: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # requests whose id was seen before: the stored result sent again
    subscribed: bool = False  # the MQTT uplink's command subscription is acknowledged
    # The latest requests, newest last: time, command, id, how it came, ok, error.
    recent: list[dict[str, object]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CommandAnswer:
    """A command's result payload, and why it was refused before running (None if it ran)."""

    body: dict[str, object]
    refused: str | None = None


class Commands(Protocol):
    status: CommandStatus

    async def handle(
        self, command: str, payload: bytes, *, via: str, expires_at: float | None = None
    ) -> CommandAnswer:
        """Check and run one request; never raises for a bad request."""


@dataclass(slots=True)
class GatewayView:
    """What the local server, /metrics and /healthz read of a running gateway."""

    settings: Settings
    log: ReadingLog
    devices: Mapping[str, Driver]
    uplinks: Mapping[str, Uplink]
    started: float  # time.time() at start
    commands: Commands | None = None

    @property
    def gateway_id(self) -> str:
        return self.settings.gateway.id
