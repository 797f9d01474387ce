"""``Store``: the append-only log of readings as the rest of the gateway sees it.

Writes go through one writer thread (``writer.py``), reads through one reader
thread (``reader.py``); the event loop only queues work and receives each
committed batch, in seq order, to hand to its listeners and waiters.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import StoreClosedError, StoreError
from gateway.interfaces import CommitListener, StoreStats
from gateway.reading import DeadLetter, Sample, StoredReading
from gateway.settings import StoreSettings
from gateway.store import check, schema
from gateway.store.ingress import (
    HIGH_WATER,
    MAX_PENDING_REQUESTS,
    Ack,
    Congestion,
    Damaged,
    Flush,
    Register,
    Release,
    Request,
    Stop,
)
from gateway.store.lock import DataDirLock
from gateway.store.reader import Reader
from gateway.store.seq_floor import SeqFloor
from gateway.store.writer import Outcome, Writer

log = logging.getLogger(__name__)

# After a start, persisted cursors of consumers that have not registered yet
# still hold retention this long, so a restart never deletes what an uplink
# about to register has not sent.
STARTUP_GRACE = 60.0
# How long opening waits for the data directory's lock before giving up.
LOCK_WAIT = 2.0
# A writer loop waits at most a couple of seconds between turns; a turn (one commit
# and bounded maintenance) takes far less than this even on a slow SD card.
STALL_AFTER = 60.0


def _open_writer(
    path: Path, settings: StoreSettings, max_page_count: int | None, startup_grace: float
) -> Writer:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = DataDirLock(path.parent)
        lock.acquire(wait=LOCK_WAIT)
    except OSError as e:
        raise StoreError(f"cannot open the store in {path.parent}: {e}") from e
    try:
        return _open_locked(path, settings, max_page_count, startup_grace, lock)
    except (sqlite3.Error, OSError) as e:
        lock.release()
        raise StoreError(f"cannot open the store {path}: {e}") from e
    except BaseException:
        lock.release()
        raise


def _open_locked(
    path: Path,
    settings: StoreSettings,
    max_page_count: int | None,
    startup_grace: float,
    lock: DataDirLock,
) -> Writer:
    floor = SeqFloor(path.with_name("seq.floor"))

    def opener() -> sqlite3.Connection:
        return _connect(path, settings, max_page_count)[0]

    moved: tuple[Path, str] | None = None
    while True:
        # Read before SQLite recovers the WAL, and compared with what it kept.
        last_commit = schema.wal_last_commit(path)
        conn: sqlite3.Connection | None = None
        try:
            conn, frames = _connect(path, settings, max_page_count)
            wal_lost = last_commit < 0 or last_commit > frames
            if wal_lost:
                log.error(
                    "store: %s-wal held committed transactions SQLite could not recover "
                    "(damaged, or torn by a power cut); seqs continue above the floor",
                    path.name,
                )
            writer = Writer(
                path,
                settings,
                conn,
                floor,
                lock,
                startup_grace=startup_grace,
                opener=opener,
                wal_lost=wal_lost,
            )
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            if not schema.is_corruption(e) or moved is not None:
                raise
            # Damaged where opening reads (the header, the schema, the meta or cursor
            # pages, the newest readings): moved aside, and a fresh database started.
            moved = (schema.move_aside(path), str(e))
            continue
        except sqlite3.Error:
            if conn is not None:
                conn.close()
            raise
        if moved is not None:
            writer.note_moved_aside(*moved)
        return writer


def _connect(
    path: Path, settings: StoreSettings, max_page_count: int | None
) -> tuple[sqlite3.Connection, int]:
    """A write connection with the schema in place, and the WAL frames SQLite kept."""
    conn = schema.connect(path, settings.durability)
    try:
        frames = schema.wal_frames(conn)
        if max_page_count is not None:
            conn.execute(f"PRAGMA max_page_count = {int(max_page_count)}")
        schema.create_schema(conn)
        # Touch every table so a damaged file shows now, not in the first commit.
        conn.execute("SELECT max(seq) FROM readings").fetchone()
        conn.execute("SELECT count(*) FROM cursors").fetchone()
    except sqlite3.Error:
        conn.close()
        raise
    return conn, frames


class Store:
    """Implements ``SampleSink`` and ``ReadingLog``; open with ``await Store.open(...)``."""

    def __init__(self, writer: Writer, congestion: Congestion) -> None:
        self._writer = writer
        self._congestion = congestion
        self._room_waiters: list[asyncio.Future[None]] = []
        self._reader = Reader(
            writer.path, writer.settings.durability, lambda: writer.generation, self._damaged
        )
        self._check = check.IntegrityCheck(
            writer.path, lambda: writer.generation, self._damaged, check.TIME_LIMIT, check.INTERVAL
        )
        # Set once the writer thread has ended on its own (a bug): see ``wait_failed``.
        self._failed = asyncio.Event()
        self._pending_requests = 0
        self._last_seq = writer.last_seq
        self._listeners: list[CommitListener] = []
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._closed = False
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(
        cls,
        path: Path,
        settings: StoreSettings,
        *,
        max_page_count: int | None = None,
        startup_grace: float = STARTUP_GRACE,
        high_water: int = HIGH_WATER,
    ) -> Store:
        """Open (or create) the log at ``path``.

        ``max_page_count`` caps the database file in pages (SQLite answers "disk
        full" beyond it); ``startup_grace`` is how long unregistered cursors hold
        retention after the start; ``high_water`` is how many samples put and not yet
        committed make the store congested (see ``congested``).
        """
        congestion = Congestion(high_water)
        writer = await asyncio.to_thread(
            _open_writer, path, settings, max_page_count, startup_grace
        )
        store = cls(writer, congestion)
        writer.start(store._loop, store._on_outcome)
        # Off the writer's path and after open has returned: a large log on a slow card
        # delays neither readiness nor commits.
        store._check.start()
        return store

    async def close(self) -> None:
        """Commit everything already put, then stop the writer and the reader."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._check.stop)
        if not self._writer.stopped:
            await self._request(Stop(self._loop.create_future()))
        await asyncio.to_thread(self._writer.join)
        await self._reader.close()
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(StoreClosedError("the store is closed"))
        self._waiters.clear()
        self._wake_room_waiters()

    # -- SampleSink --------------------------------------------------------------

    def put_samples(self, samples: Sequence[Sample]) -> None:
        """Queue samples for the next commit; call on the event loop's thread.

        Never blocks. Drivers that can pause their input watch ``congested``; if the
        writer is still far behind (a hung disk, a producer that cannot pause), the
        samples are dropped and counted rather than piling up in memory.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        if samples and not self._writer.ingress.put_samples(samples):
            log.debug("store: writer behind; %d samples dropped", len(samples))

    def put_dead_letter(self, dead_letter: DeadLetter) -> None:
        """Queue a dead letter; bounded like samples (counted in ``dead_letters`` and
        ``dead_letters_lost`` when refused), and weighed in ``congested``."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        if not self._writer.ingress.put_dead_letter(dead_letter):
            log.debug("store: writer behind; a dead letter of %s lost", dead_letter.device)

    @property
    def congested(self) -> bool:
        """True from ``high_water`` samples put and not yet committed until half as many.

        A store that cannot commit (a full disk, a failing write) is never congested:
        its drivers go on reading and its own overflow policy decides, counted, what
        it keeps in memory, rather than readings being lost uncounted in a device.
        """
        writer = self._writer
        if self._closed or writer.stopped or writer.failure is not None:
            return False
        return self._congestion.update(writer.pending_weight)

    @property
    def paced(self) -> bool:
        """False while live stream clients watch (see ``set_watched``)."""
        return self._writer.watched_spacing is None

    @property
    def congestion_episodes(self) -> int:
        """How many times the store has become congested since it opened."""
        return self._congestion.episodes

    async def wait_for_room(self) -> None:
        """Return once the store is not congested; at once if it is not now."""
        if not self.congested:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._room_waiters.append(future)
        try:
            await future
        finally:
            if future in self._room_waiters:
                self._room_waiters.remove(future)

    def _wake_room_waiters(self) -> None:
        waiters, self._room_waiters = self._room_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    # -- ReadingLog --------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest seq announced to listeners; every listener added now sees all after it."""
        return self._last_seq

    def set_watched(self, spacing: float | None) -> None:
        """Pacing (``commit_spacing``, drivers' ``read_interval``) saves CPU and SD-card
        wear on a gateway nobody watches (``spacing`` None); someone watching the live
        stream gets each reading as soon as it is committed instead.

        Each commit then costs every client a frame, so the stream asks for commits of a
        steady flow to start at least ``spacing`` apart (see ``gateway.local.fanout_pace``),
        never more than ``commit_spacing``.
        """
        self._writer.watched_spacing = spacing

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: CommitListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def wait_beyond(self, seq: int) -> int:
        if self._last_seq > seq:
            return self._last_seq
        if self._closed:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[int] = self._loop.create_future()
        entry = (seq, future)
        self._waiters.append(entry)
        try:
            return await future
        finally:
            # A waiter cancelled by its caller's timeout must not pile up while idle.
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def read_after(
        self, seq: int, limit: int, device_glob: str | None = None
    ) -> list[StoredReading]:
        if limit <= 0:
            return []
        return await self._reader.read_after(seq, limit, device_glob)

    async def read_devices_after(
        self, seq: int, limit: int, devices: Sequence[str]
    ) -> list[StoredReading]:
        """Up to ``limit`` readings of ``devices`` (exact ids) with seq > ``seq``."""
        if limit <= 0 or not devices:
            return []
        return await self._reader.read_devices_after(seq, limit, devices)

    async def oldest_seq(self) -> int | None:
        """The lowest seq still in the log (None when it holds no reading)."""
        return await self._reader.oldest_seq()

    async def consumers(self) -> dict[str, int]:
        """Every durable cursor, registered since open or not, and its seq."""
        return await self._reader.cursors()

    async def register_consumer(
        self,
        name: str,
        *,
        start_now: bool = False,
        start_at: int = 0,
        best_effort: bool = False,
    ) -> int:
        """Create the durable cursor ``name`` if new (at the last seq with ``start_now``,
        else at ``start_at``: 0 is before the oldest reading); return its seq.
        ``best_effort``: retention does not wait for it."""
        if not name:
            raise StoreError("a consumer needs a name")
        request = Register(self._loop.create_future(), name, start_now, start_at, best_effort)
        return await self._request(request)

    async def release_consumer(self, name: str) -> int:
        """Delete the cursor ``name``: it holds retention no more. Returns where it was."""
        return await self._request(Release(self._loop.create_future(), name))

    async def ack(self, name: str, seq: int) -> None:
        await self._request(Ack(self._loop.create_future(), name, seq))

    async def flush(self) -> int:
        """Wait until everything put so far is committed (or dropped); return ``last_seq``."""
        return await self._request(Flush(self._loop.create_future()))

    @property
    def health_reason(self) -> str | None:
        return self._writer.degraded

    def stall_reason(self, now: float | None = None) -> str | None:
        """Why the writer is wedged, so that only a restart can help; else None.

        Unlike ``health_reason`` this never reports a degraded store (a full disk,
        a refused commit): the writer still comes round its loop then, and a
        restart would cure nothing.
        """
        writer = self._writer
        if writer.stopped:
            return None if self._closed else writer.failure or "the store writer has stopped"
        idle = (time.monotonic() if now is None else now) - writer.heartbeat
        if idle > STALL_AFTER:
            return f"the store writer has not come round its loop for {idle:.0f} s"
        return None

    async def wait_failed(self) -> str:
        """Return (why) once the writer thread has ended by itself: from then on the store
        accepts nothing, and only a restart of the process brings it back."""
        await self._failed.wait()
        return self._writer.failure or "the store writer has stopped"

    def stats(self) -> StoreStats:
        w = self._writer
        ingress = w.ingress
        return StoreStats(
            depth=w.depth,
            bytes=w.bytes,
            last_seq=self._last_seq,
            dropped=w.dropped,
            dead_letters=w.dead_letters + ingress.dead_rejected - w.dead_rejected_seen,
            oldest_unsent_ts=w.oldest_unsent_ts,
            degraded=w.degraded,
            free_bytes=w.free_bytes,
            commits=w.commits,
            committed_readings=w.committed_readings,
            commit_seconds=w.commit_seconds,
            dead_letters_lost=w.dead_letters_lost + ingress.dead_rejected - w.dead_rejected_seen,
            moved_aside=w.moved_aside,
            moved_aside_at=w.moved_aside_at,
            moved_aside_reason=w.moved_aside_reason,
            integrity_checks=self._check.completed,
        )

    # -- from the writer -----------------------------------------------------------

    async def _request(self, request: Request) -> int:
        if self._closed and not isinstance(request, Stop):
            raise StoreClosedError("the store is closed")
        if self._writer.stopped:
            raise StoreError(self._writer.failure or "the store writer has stopped")
        if self._pending_requests >= MAX_PENDING_REQUESTS and not isinstance(request, Stop):
            raise StoreError("the store is busy: too many requests wait for the writer")
        self._pending_requests += 1
        try:
            self._writer.ingress.put(request)
            return await request.future
        finally:
            self._pending_requests -= 1

    def _damaged(self, generation: int, reason: str) -> None:
        """From any thread: a read found the database ``generation`` damaged."""
        self._writer.ingress.put(Damaged(generation, reason))

    def _on_outcome(self, outcome: Outcome) -> None:
        """Runs on the loop: announce a committed batch, then resolve requests."""
        self._last_seq = max(self._last_seq, outcome.last_seq)
        if self._writer.stopped and not self._closed:
            self._failed.set()
        if self._room_waiters and not self.congested:
            self._wake_room_waiters()
        if outcome.readings:
            # One callback per listener keeps a failing listener from starving the others.
            for listener in self._listeners:
                self._loop.call_soon(listener, outcome.readings)
        if self._waiters:
            ready = [f for s, f in self._waiters if s < self._last_seq]
            self._waiters = [(s, f) for s, f in self._waiters if s >= self._last_seq]
            for future in ready:
                if not future.done():
                    future.set_result(self._last_seq)
        for future, result in outcome.results:
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
