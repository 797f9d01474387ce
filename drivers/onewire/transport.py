"""The ``onewire`` driver: every temperature probe of a w1 sysfs tree, read at an interval.

Each poll lists the tree and reads each probe's ``temperature`` file (or ``w1_slave``
on older kernels) in a worker thread: the kernel answers a read only once the probe has
converted (up to 750 ms each), which must never hold up the event loop. One poll runs
at a time; a poll that overruns its interval delays the next instead of piling up
threads on a hung bus.

Probes come and go with the wiring: one that appears is read from the next poll on;
one that disappears is logged and counted as an error. A tree that cannot be listed
(no w1 bus master: the ``w1-gpio`` overlay is off) leaves the device ``waiting``,
listed again every poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drivers.fault_log import FaultLog
from drivers.onewire.codec import PROBE_ID, Refused, decode
from drivers.onewire.settings import OneWireSettings
from gateway.errors import DriverError
from gateway.interfaces import DeviceStatus, SampleSink
from gateway.reading import DeadLetter, Sample, Value

log = logging.getLogger(__name__)

# The newer file first: it is cheaper (no scratchpad dump) and needs no CRC parsing.
FILES = ("temperature", "w1_slave")
# Bounds what one unreadable file can put in a dead letter.
MAX_FILE_BYTES = 4096
REASON_NO_FILE = "no temperature or w1_slave file (is the w1_therm module loaded?)"


@dataclass(frozen=True, slots=True)
class ProbeRead:
    """One probe's file as read, or why it could not be."""

    probe: str
    filename: str
    raw: bytes
    ts: float
    error: str | None = None


def read_tree(base: Path, clock: Callable[[], float]) -> list[ProbeRead]:
    """Runs in a worker thread: every probe's file, in id order; OSError if ``base`` is
    not a readable folder. A probe unplugged during the poll is left out."""
    probes = sorted(entry.name for entry in base.iterdir() if PROBE_ID.fullmatch(entry.name))
    reads: list[ProbeRead] = []
    for probe in probes:
        read = _read_probe(base / probe, probe, clock)
        if read is not None:
            reads.append(read)
    return reads


def _read_probe(folder: Path, probe: str, clock: Callable[[], float]) -> ProbeRead | None:
    for filename in FILES:
        try:
            with (folder / filename).open("rb") as file:
                raw = file.read(MAX_FILE_BYTES)
        except FileNotFoundError:
            continue
        except OSError as exc:
            # The kernel answers a read of a probe that stopped answering with EIO.
            return ProbeRead(
                probe, filename, b"", clock(), f"cannot read {filename}: {exc.strerror or exc}"
            )
        return ProbeRead(probe, filename, raw, clock())
    if not folder.exists():
        return None
    return ProbeRead(probe, "", b"", clock(), REASON_NO_FILE)


class OneWireDriver:
    """Reads every 1-Wire temperature probe under ``base_path`` into a ``SampleSink``."""

    def __init__(
        self,
        settings: OneWireSettings,
        sink: SampleSink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = settings.id
        self.settings = settings
        self.status = DeviceStatus()
        # The probes seen in the last poll.
        self.present: frozenset[str] = frozenset()
        self._sink = sink
        self._clock = clock
        self._faults = FaultLog(settings.id, log)
        # One poll at a time, a read_now's included: each may hold the bus for seconds.
        self._polling = asyncio.Lock()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.status.state = "stopped"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        base = Path(self.settings.base_path)
        due = loop.time()
        while True:
            await self._poll(base)
            # A schedule, not a sleep after each poll, so polls do not drift.
            due = max(due + self.settings.poll_interval, loop.time())
            await asyncio.sleep(due - loop.time())

    async def read_now(self) -> dict[str, Value]:
        """Read every probe now (after a poll under way, if any), store the readings as a
        poll's, and answer with the values by sensor; a probe that could not be read is
        left out (a dead letter, as in a poll). DriverError if the tree cannot be listed."""
        samples = await self._poll(Path(self.settings.base_path))
        if isinstance(samples, str):
            raise DriverError(self.device_id, samples)
        return {sample.sensor: sample.value for sample in samples}

    async def _poll(self, base: Path) -> list[Sample] | str:
        """One read of the tree: its readings, or why it cannot be listed."""
        async with self._polling:
            try:
                reads = await asyncio.to_thread(read_tree, base, self._clock)
            except OSError as exc:
                return self._tree_failed(exc)
            if self.status.state != "open":
                self._faults.clear()
                log.info("%s: reading 1-Wire probes under %s", self.device_id, base)
            self.status.state = "open"
            return self._take(reads)

    def _tree_failed(self, exc: OSError) -> str:
        message = (
            f"cannot list {self.settings.base_path}: {exc.strerror or exc} "
            "(no 1-Wire bus master: is the w1-gpio overlay enabled?)"
        )
        self.status.state = "waiting"
        self.status.errors += 1
        self.status.last_error = message
        self._faults.report(logging.WARNING, message)
        self._gone(self.present)
        self.present = frozenset()
        return message

    def _take(self, reads: list[ProbeRead]) -> list[Sample]:
        seen = frozenset(read.probe for read in reads)
        for probe in sorted(seen - self.present):
            log.info("%s: probe %s found", self.device_id, probe)
        self._gone(self.present - seen)
        self.present = seen
        samples: list[Sample] = []
        for read in reads:
            if read.error is not None:
                self._dead_letter(read, read.error)
                continue
            value = decode(read.filename, read.raw.decode("ascii", "replace"))
            if isinstance(value, Refused):
                self._dead_letter(read, value.reason)
                continue
            sensor = self.settings.names.get(read.probe, read.probe)
            unit = self.settings.units.get(sensor, "°C")
            samples.append(Sample(self.device_id, sensor, value, read.ts, unit))
        if samples:
            self._sink.put_samples(samples)
            self.status.readings += len(samples)
            self.status.last_reading_ts = samples[-1].ts
        return samples

    def _gone(self, probes: frozenset[str]) -> None:
        for probe in sorted(probes):
            message = f"probe {probe} disappeared"
            self.status.errors += 1
            self.status.last_error = message
            log.warning("%s: %s", self.device_id, message)

    def _dead_letter(self, read: ProbeRead, reason: str) -> None:
        where = f"{read.probe}/{read.filename}" if read.filename else read.probe
        message = f"{where}: {reason}"
        self.status.errors += 1
        self.status.last_error = message
        self._sink.put_dead_letter(DeadLetter(self.device_id, message, read.raw, read.ts))
