"""The one thread that writes the database: natural group commit.

Each turn the writer takes everything waiting (samples, dead letters, cursor
registrations and acks), commits it in ONE transaction and loops. One reading
alone is committed at once; under load, readings pile up while a commit runs
and the next transaction takes them all, so batches grow by themselves and no
timer is needed. Bounds and retention run in the same transaction, with work
proportional to what was inserted, so the log never falls behind its bounds.

When a commit fails (disk full, database busy or damaged), nothing is lost
that fits in memory: the samples stay in a bounded buffer, the store reports
itself degraded, and the writer retries with backoff until the disk has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import StoreClosedError, StoreError
from gateway.reading import DeadLetter, Sample, StoredReading, encode
from gateway.settings import StoreSettings
from gateway.store import schema, trim
from gateway.store.ingress import Ack, CursorRequest, Flush, Ingress, Register, Request, Stop
from gateway.store.lock import DataDirLock
from gateway.store.seq_floor import SeqFloor

log = logging.getLogger(__name__)

# Samples held in memory while they cannot be committed (each queue: the loop's
# and the writer's own); beyond this the overflow policy drops them, counted.
MAX_UNSAVED = 100_000
# Dead letters held in memory while they cannot be committed.
MAX_UNSAVED_DEAD_LETTERS = 1_000
# Readings per transaction: keeps one commit's memory and latency bounded when a
# backlog (after a full disk) is written out.
MAX_BATCH = 50_000
DISK_FULL = "disk full"
# Dead letters kept in the database; the oldest go first.
MAX_DEAD_LETTERS = 10_000
# Rows retention may delete per turn, at least; more when more was inserted.
RETENTION_CHUNK = 5_000
# Bounds and retention are checked at most this often when under the byte bound.
MAINTENANCE_INTERVAL = 0.25
# Upper bound of what one inserted row adds to the pages in use beyond its payload and
# device (ts, seq, cell header and pointer, with slack); doubled, and a few pages per
# commit for splits, so that between exact measurements the estimate never falls short.
ROW_OVERHEAD = 64
COMMIT_PAGES = 4
# Idle wake-up, so retention and the free-space check run without traffic.
IDLE_WAKE = 1.0
RETRY_MIN = 0.05
RETRY_MAX = 2.0
# A stop gives a failing disk this many more attempts before giving up.
STOP_ATTEMPTS = 3


# A request's future and what to resolve it with (a value or an error).
Result = tuple[asyncio.Future[int], int | BaseException]


@dataclass(slots=True)
class Outcome:
    """What one turn produced, handed to the event loop in one callback."""

    readings: list[StoredReading]
    last_seq: int
    results: list[Result] = field(default_factory=list)


@dataclass(slots=True)
class _Batch:
    """What one transaction will do; applied to the writer's state only on success."""

    samples: list[Sample]
    dead_letters: list[DeadLetter]
    acks: dict[str, int]
    registers: list[str]
    rows: list[tuple[int, float, str, bytes]] = field(default_factory=list)
    readings: list[StoredReading] = field(default_factory=list)
    last_seq: int = 0
    dropped: int = 0  # unsent readings deleted by bounds, or samples refused
    depth_delta: int = 0
    rejected: bool = False
    dropped_total: int = 0  # as written to the meta table
    trimmed: bool = False  # rows were deleted
    unencodable: list[DeadLetter] = field(default_factory=list)


class Writer:
    """Owns the write connection and every piece of state a commit changes.

    The loop thread reads the plain attributes below (``last_seq``, ``depth``,
    ``dropped`` …) for stats; each is assigned whole by this thread, after commit.
    """

    def __init__(
        self,
        path: Path,
        settings: StoreSettings,
        conn: sqlite3.Connection,
        floor: SeqFloor,
        lock: DataDirLock,
        *,
        startup_grace: float,
    ) -> None:
        self.path = path
        self.settings = settings
        self._conn = conn
        self._floor = floor
        self._lock = lock
        self._grace_until = time.monotonic() + startup_grace
        self.ingress = Ingress(MAX_UNSAVED)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliver: Callable[[Outcome], None] | None = None
        self._thread: threading.Thread | None = None

        meta = schema.read_meta(conn)
        max_row = conn.execute("SELECT max(seq) FROM readings").fetchone()[0] or 0
        self.last_seq = max(meta.get(schema.META_LAST_SEQ, 0), max_row)
        if schema.META_LAST_SEQ not in meta or settings.durability == "normal":
            # A fresh database, or one whose last commits a power cut may have undone
            # (commits are not fsynced with "normal"; an uplink may have sent them):
            # continue above every seq this data dir ever handed out. After a clean
            # close the floor is exactly the last seq, so there is no gap.
            self.last_seq = max(self.last_seq, floor.value)
        self._dropped_base = meta.get(schema.META_DROPPED, 0)
        self._dropped_here = 0  # by the writer since open
        self.dead_letters = meta.get(schema.META_DEAD_LETTERS, 0)
        self.cursors: dict[str, int] = dict(conn.execute("SELECT name, seq FROM cursors"))
        self.active: set[str] = set()
        self.depth = 0
        self.oldest_unsent_ts: float | None = None
        self.page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self.page_count = 0
        # Pages in use (bytes) at the last exact measurement, and an upper bound of what
        # commits since then may have added: max_bytes is checked against their sum and
        # measured exactly (two PRAGMAs) only when that sum reaches it.
        self._used = 0
        self._growth = 0
        self.free_bytes: int | None = None
        self._free_space_error: str | None = None
        self.commits = 0
        self.committed_readings = 0
        self.commit_seconds = 0.0
        self.failure: str | None = None
        self.stopped = False  # the thread has ended
        # Set from the event loop: None while nobody watches the live stream; while
        # clients watch, commits are spaced by this instead (see ``_linger``).
        self.watched_spacing: float | None = None
        self.store_full = False
        self.settled = 0  # samples committed or dropped by the writer
        # When the writer last came round its loop. The watchdog reads it to tell a
        # wedged writer (a restart cures it) from a degraded one (a restart does not).
        self.heartbeat = time.monotonic()

        self._unsaved: deque[Sample] = deque()
        self._unsaved_dead: deque[DeadLetter] = deque()
        self._acks: dict[str, int] = {}
        self._registers: list[str] = []
        self._requests: list[CursorRequest] = []
        self._flushes: list[Flush] = []
        self._batch_limit = MAX_BATCH
        self._last_start = 0.0  # perf_counter when the last transaction began
        self._inserted_since_maintenance = 0
        self._next_maintenance = 0.0
        self._data_version = self._pragma("data_version")
        # Totals as last written to the meta table: unchanged ones are not rewritten.
        self._written_dropped = self.dropped
        self._written_dead_letters = self.dead_letters
        self._measure()
        self._measure_oldest()
        self._check_free_space()

    # -- state the loop reads ------------------------------------------------

    @property
    def dropped(self) -> int:
        return self._dropped_base + self._dropped_here + self.ingress.rejected

    @property
    def bytes(self) -> int:
        return self.page_count * self.page_size

    @property
    def degraded(self) -> str | None:
        reasons = []
        if self.failure is not None:
            reasons.append(self.failure)
        if self.store_full:
            reasons.append("store full: new readings are refused (overflow = reject_new)")
        if self._free_space_error is not None:
            reasons.append(self._free_space_error)
        elif self.free_bytes is not None and self.free_bytes < self.settings.min_free_bytes:
            reasons.append(
                f"low disk space: {self.free_bytes} bytes free on {self.path.parent}, "
                f"below min_free_bytes = {self.settings.min_free_bytes}"
            )
        return "; ".join(reasons) if reasons else None

    # -- thread life -----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[Outcome], None]) -> None:
        self._loop = loop
        self._deliver = deliver
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            stop = self._turns_until_stopped()
        except BaseException as e:
            # Last resort, outside the loop: a bug here must not leave callers
            # waiting forever on a thread that is gone.
            log.critical("store writer stopped by an unexpected error", exc_info=True)
            self.failure = f"writer stopped: {e!r}"
            self.stopped = True
            error = StoreError(self.failure)
            waiting = [i for i in self.ingress.take(0) if isinstance(i, Request)]
            requests = [*self._requests, *self._flushes, *waiting]
            self._hand_over(Outcome([], self.last_seq, [(r.future, error) for r in requests]))
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._lock.release()
            return
        self._finish(stop)

    def _turns_until_stopped(self) -> Stop:
        retry_delay = RETRY_MIN
        stop: Stop | None = None
        failed_stops = 0
        while True:
            self.heartbeat = time.monotonic()
            if self.failure is not None:
                timeout: float | None = retry_delay
            else:
                timeout = 0.0 if self._has_work() or stop is not None else IDLE_WAKE
            stop = self._take(timeout) or stop
            linger = self._linger() if stop is None else 0.0
            if linger > 0:
                time.sleep(linger)
                stop = self._take(0.0)
            ok = self._turn()
            if ok:
                retry_delay = RETRY_MIN
            else:
                retry_delay = min(retry_delay * 2, RETRY_MAX)
                if stop is not None:
                    failed_stops += 1
            if stop is not None and (not self._has_work() or failed_stops >= STOP_ATTEMPTS):
                return stop

    def _finish(self, stop: Stop) -> None:
        lost = len(self._unsaved)
        if lost:
            log.error("store closed with %d readings that could not be committed", lost)
            self._dropped_here += lost
            try:
                self._conn.execute(
                    schema.UPSERT_META,
                    (schema.META_DROPPED, self.dropped),
                )
            except sqlite3.Error as e:
                log.error("store: cannot record the %d dropped readings: %s", lost, e)
        closed = StoreClosedError("the store is closed")
        results: list[Result] = [(r.future, closed) for r in self._requests]
        results += [(f.future, closed) for f in self._flushes]
        results.append((stop.future, self.last_seq))
        try:
            self._conn.execute("PRAGMA optimize")
        except sqlite3.Error as e:
            log.warning("store: optimize on close failed: %s", e)
        # Unless every commit is known to be on disk, the floor keeps its reserve: the
        # next start then skips ahead, never back.
        try:
            # A checkpoint that copies the whole WAL has synced it and the database
            # (with "normal" too): only then may the floor say where seqs stop.
            busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
            if not busy and frames == copied:
                self._floor.settle(self.last_seq)
        except (sqlite3.Error, OSError) as e:
            log.warning("store: cannot settle the seq floor on close: %s", e)
        self._conn.close()
        self._lock.release()
        self.stopped = True
        self._hand_over(Outcome([], self.last_seq, results))

    def _linger(self) -> float:
        """Seconds to wait for more readings before committing.

        While readings keep coming, a transaction starts at most ``commit_spacing``
        after the one before it started. A reading after a quiet spell is committed at
        once; a steady trickle (1,000 readings/s, each arriving while the last commit's
        fsync is done) shares transactions instead of paying a transaction, an fsync and
        whole WAL pages per reading. Flushes and cursor requests never wait for it.
        """
        if not self._unsaved or self._requests or self._flushes or self.failure is not None:
            return 0.0
        spacing = self.settings.commit_spacing
        if self.watched_spacing is not None:
            spacing = min(spacing, self.watched_spacing)
        return max(0.0, self._last_start + spacing - time.perf_counter())

    def _has_work(self) -> bool:
        return bool(self._unsaved or self._unsaved_dead or self._requests or self._flushes)

    def _take(self, timeout: float | None) -> Stop | None:
        stop = None
        for item in self.ingress.take(timeout):
            if isinstance(item, DeadLetter):
                self._unsaved_dead.append(item)
            elif isinstance(item, Flush):
                item.target = self.ingress.taken
                self._flushes.append(item)
            elif isinstance(item, Ack):
                if item.seq > self.last_seq:
                    error = StoreError(f"ack of {item.name} to {item.seq} beyond last seq")
                    self._hand_over(Outcome([], self.last_seq, [(item.future, error)]))
                    continue
                self._acks[item.name] = max(item.seq, self._acks.get(item.name, 0))
                self._requests.append(item)
            elif isinstance(item, Register):
                self._registers.append(item.name)
                self._requests.append(item)
            elif isinstance(item, Stop):
                stop = item
            elif not isinstance(item, Request):
                self._unsaved.extend(item)
                self.ingress.taken += len(item)
        self._bound_unsaved()
        return stop

    def _bound_unsaved(self) -> None:
        excess = len(self._unsaved) - MAX_UNSAVED
        if excess > 0:
            if self.settings.overflow == "drop_oldest":
                for _ in range(excess):
                    self._unsaved.popleft()
            else:
                for _ in range(excess):
                    self._unsaved.pop()
            self._dropped_here += excess
            self.settled += excess
        while len(self._unsaved_dead) > MAX_UNSAVED_DEAD_LETTERS:
            # Its raw bytes are lost, but it still counts (persisted with the next commit),
            # as the dead letters beyond the newest rows kept do.
            self._unsaved_dead.popleft()
            self.dead_letters += 1

    # -- one turn: one transaction --------------------------------------------

    def _turn(self) -> bool:
        """Commit what is waiting (and any due upkeep); False if the commit failed."""
        now = time.monotonic()
        maintenance = now >= self._next_maintenance
        if not (self._has_work() or maintenance):
            return True
        try:
            self._notice_outside_changes()
        except sqlite3.Error as e:
            self._failed(e, 0)
            return False
        if maintenance:
            self._next_maintenance = now + MAINTENANCE_INTERVAL
            self._check_free_space()
        if self.failure is not None and self._unsaved:
            # Commit acks and upkeep on their own first: freeing space must not
            # depend on the readings that do not fit yet.
            upkeep = _Batch([], [], dict(self._acks), list(self._registers))
            if not self._attempt(upkeep, maintenance=True):
                return False
        upkeep_due = maintenance or self.failure is not None
        while True:
            batch = self._form_batch()
            if self._attempt(batch, upkeep_due):
                self._batch_limit = min(MAX_BATCH, 2 * self._batch_limit)
                return True
            if self.failure != DISK_FULL or len(batch.samples) <= 1:
                return False
            # Whatever still fits is committed now (and a bound that is reached
            # then applies); the limit grows back with each success.
            self._batch_limit = len(batch.samples) // 2

    def _attempt(self, batch: _Batch, maintenance: bool) -> bool:
        started = self._last_start = time.perf_counter()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._transaction(batch, maintenance)
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk).
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as e:
            self._failed(e, len(batch.samples))
            return False
        self._committed(batch, time.perf_counter() - started, maintenance)
        return True

    def _form_batch(self) -> _Batch:
        if len(self._unsaved) <= self._batch_limit:
            samples = list(self._unsaved)
        else:
            samples = list(itertools.islice(self._unsaved, self._batch_limit))
        return _Batch(
            samples=samples,
            dead_letters=list(self._unsaved_dead),
            acks=dict(self._acks),
            registers=list(self._registers),
        )

    def _transaction(self, batch: _Batch, maintenance: bool) -> None:
        conn = self._conn
        cursors = dict(self.cursors)
        for name in batch.registers:
            conn.execute("INSERT OR IGNORE INTO cursors (name, seq) VALUES (?, 0)", (name,))
            cursors.setdefault(name, 0)
        for name, seq in batch.acks.items():
            if seq > cursors.get(name, 0):
                conn.execute(
                    "INSERT INTO cursors (name, seq) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET seq = max(seq, excluded.seq)",
                    (name, seq),
                )
                cursors[name] = seq
        active = self.active | set(batch.registers)
        old_floor = self._active_floor(self.cursors, self.active)
        new_floor = self._active_floor(cursors, active)
        if active != self.active:
            if new_floor is not None:
                batch.depth_delta = self._count_after(new_floor) - self.depth
        elif old_floor is not None and new_floor is not None and new_floor > old_floor:
            (acked,) = conn.execute(
                "SELECT count(*) FROM readings WHERE seq > ? AND seq <= ?", (old_floor, new_floor)
            ).fetchone()
            batch.depth_delta = -acked

        floors = trim.Floors(new_floor, self._holding_floor(cursors, active))
        if maintenance:
            self._expire(batch, floors)
        room = self._make_room(batch, floors)
        if not room and self.settings.overflow == "reject_new":
            batch.rejected = True
        else:
            self._insert(batch, new_floor is not None)
        if batch.dead_letters or batch.unencodable:
            conn.executemany(
                "INSERT INTO dead_letters (ts, device, reason, raw) VALUES (?, ?, ?, ?)",
                [(d.ts, d.device, d.reason, d.raw) for d in batch.dead_letters + batch.unencodable],
            )
            conn.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?",
                (MAX_DEAD_LETTERS,),
            )
        if batch.rejected:
            batch.dropped += len(batch.samples)
        meta = []
        if batch.last_seq:
            meta.append((schema.META_LAST_SEQ, batch.last_seq))
        batch.dropped_total = self.dropped + batch.dropped
        if batch.dropped_total != self._written_dropped:
            meta.append((schema.META_DROPPED, batch.dropped_total))
        dead_total = self.dead_letters + len(batch.dead_letters) + len(batch.unencodable)
        if dead_total != self._written_dead_letters:
            meta.append((schema.META_DEAD_LETTERS, dead_total))
        if meta:
            conn.executemany(schema.UPSERT_META, meta)

    def _insert(self, batch: _Batch, counted: bool) -> None:
        # The per-reading loop of the hot path: names bound locally on purpose.
        seq = self.last_seq
        rows = batch.rows
        add_row = rows.append
        add_reading = batch.readings.append
        encode_one = encode
        stored = StoredReading
        for sample in batch.samples:
            try:
                payload = encode_one(seq + 1, sample)
            except (TypeError, ValueError) as e:
                # JSON cannot carry it (a non-finite ts, an odd value type): keep it as
                # a dead letter rather than lose it. encode() thus also vouches for ts.
                reason = f"unencodable sample: {e}"
                batch.unencodable.append(
                    DeadLetter(sample.device, reason, repr(sample).encode(), time.time())
                )
                continue
            seq += 1
            device = sample.device
            add_row((seq, sample.ts, device, payload))
            add_reading(stored(seq, device, payload))
        if rows:
            self._floor.reserve(seq)
            self._conn.executemany(
                "INSERT INTO readings (seq, ts, device, payload) VALUES (?, ?, ?, ?)", rows
            )
            if counted:
                batch.depth_delta += len(rows)
        batch.last_seq = seq

    def _expire(self, batch: _Batch, floors: trim.Floors) -> None:
        """Retention behind every cursor after ``history``, and the ``max_age`` bound."""
        chunk = max(RETENTION_CHUNK, 2 * self._inserted_since_maintenance)
        now = time.time()
        upto = floors.holding if floors.holding is not None else self.last_seq
        cutoff = now - self.settings.history
        self._count(
            batch, trim.expired(self._conn, chunk=chunk, cutoff=cutoff, upto=upto, floors=floors)
        )
        if self.settings.max_age > 0:
            cutoff = now - self.settings.max_age
            done = trim.expired(
                self._conn, chunk=chunk, cutoff=cutoff, upto=self.last_seq, floors=floors
            )
            self._count(batch, done)

    def _make_room(self, batch: _Batch, floors: trim.Floors) -> bool:
        """Delete the oldest rows when over ``max_bytes``; True if there is room."""
        incoming = len(batch.samples)
        max_bytes = self.settings.max_bytes
        if not incoming or self._used + self._growth < max_bytes:
            return True
        if trim.used_bytes(self._conn, self.page_size) < max_bytes:
            return True
        upto = self.last_seq
        if self.settings.overflow == "reject_new" and floors.holding is not None:
            # Only readings every consumer has may go; unsent ones are kept.
            upto = floors.holding
        count = max(incoming, 1024)
        self._count(batch, trim.oldest(self._conn, count=count, upto=upto, floors=floors))
        return trim.used_bytes(self._conn, self.page_size) < max_bytes

    @staticmethod
    def _count(batch: _Batch, done: trim.Trimmed) -> None:
        batch.dropped += done.unsent_holding
        batch.depth_delta -= done.unsent_active
        batch.trimmed = batch.trimmed or done.rows > 0

    def _count_after(self, seq: int) -> int:
        (n,) = self._conn.execute("SELECT count(*) FROM readings WHERE seq > ?", (seq,)).fetchone()
        return int(n)

    @staticmethod
    def _active_floor(cursors: dict[str, int], active: set[str]) -> int | None:
        """The lowest cursor of consumers registered since open (None: no consumer)."""
        return min((cursors[n] for n in active), default=None)

    def _holding_floor(self, cursors: dict[str, int], active: set[str]) -> int | None:
        """The cursor retention must not pass.

        Right after a start, uplinks have not registered yet; until the grace period
        ends, every persisted cursor holds, so a restart never deletes unsent rows.
        """
        if time.monotonic() < self._grace_until:
            return min(cursors.values(), default=None)
        return self._active_floor(cursors, active)

    # -- after the transaction -----------------------------------------------

    def _committed(self, batch: _Batch, elapsed: float, maintenance: bool) -> None:
        results: list[Result] = []
        n = len(batch.samples)
        if n == len(self._unsaved):
            self._unsaved.clear()
        else:
            for _ in range(n):
                self._unsaved.popleft()
        for _ in range(len(batch.dead_letters)):
            self._unsaved_dead.popleft()
        if batch.last_seq:
            self.last_seq = batch.last_seq
        for name in batch.registers:
            self.cursors.setdefault(name, 0)
            self.active.add(name)
        for name, seq in batch.acks.items():
            self.cursors[name] = max(self.cursors.get(name, 0), seq)
            if self._acks.get(name) == seq:
                del self._acks[name]
        self._registers = self._registers[len(batch.registers) :]
        self.depth = max(0, self.depth + batch.depth_delta) if self.active else 0
        self._dropped_here += batch.dropped
        self.dead_letters += len(batch.dead_letters) + len(batch.unencodable)
        self._written_dropped = batch.dropped_total
        self._written_dead_letters = self.dead_letters
        if batch.samples:
            self.store_full = batch.rejected
        self.settled += n
        self.commits += 1
        self.committed_readings += len(batch.rows)
        self.commit_seconds += elapsed
        self._inserted_since_maintenance += len(batch.rows)
        if maintenance:
            self._inserted_since_maintenance = 0
        if self.failure is not None and not self._unsaved:
            log.warning("store recovered: commits succeed again (%s)", self.failure)
            self.failure = None
        if maintenance:
            self._measure()
        else:
            self._growth += _growth_bound(batch, self.page_size)
        if maintenance or batch.acks or batch.registers or batch.trimmed:
            # The oldest unsent reading changes only when the floor moves or rows go;
            # a commit that only appends keeps it (or sets it, at depth 0).
            self._measure_oldest()
        elif self.oldest_unsent_ts is None and batch.rows and self.active:
            self.oldest_unsent_ts = batch.rows[0][1]

        remaining: list[CursorRequest] = []
        for req in self._requests:
            if isinstance(req, Register):
                done = req.name in self.active
            else:
                done = req.name not in self._acks
            if done:
                results.append((req.future, self.cursors[req.name]))
            else:
                remaining.append(req)
        self._requests = remaining
        still: list[Flush] = []
        for flush in self._flushes:
            if flush.target <= self.settled:
                results.append((flush.future, self.last_seq))
            else:
                still.append(flush)
        self._flushes = still
        self._hand_over(Outcome(batch.readings, self.last_seq, results))

    def _measure(self) -> None:
        """The file's pages and the pages in use, exactly (at maintenance, not per commit)."""
        try:
            self.page_count = self._pragma("page_count")
            self._used = trim.used_bytes(self._conn, self.page_size)
            self._growth = 0
        except sqlite3.Error as e:
            # Only the figures go stale (the byte bound then measures at every commit).
            self._growth = self.settings.max_bytes
            log.warning("store: cannot measure the database: %s", e)

    def _measure_oldest(self) -> None:
        try:
            self._measure_oldest_now()
        except sqlite3.Error as e:
            # Only the figure goes stale; the commit itself has succeeded.
            log.warning("store: cannot measure the database: %s", e)

    def _measure_oldest_now(self) -> None:
        floor = self._active_floor(self.cursors, self.active)
        if floor is None:
            self.oldest_unsent_ts = None
        else:
            row = self._conn.execute(
                "SELECT ts FROM readings WHERE seq > ? ORDER BY seq LIMIT 1", (floor,)
            ).fetchone()
            self.oldest_unsent_ts = None if row is None else float(row[0])

    def _pragma(self, name: str) -> int:
        return int(self._conn.execute(f"PRAGMA {name}").fetchone()[0])

    def _failed(self, error: sqlite3.Error | OSError, pending: int) -> None:
        if schema.is_disk_full(error):
            reason = DISK_FULL
        elif isinstance(error, sqlite3.Error) and schema.is_corruption(error):
            reason = f"database damaged ({error}); restart to move it aside"
        elif isinstance(error, sqlite3.Error) and schema.is_busy(error):
            reason = "database busy"
        else:
            reason = f"write failed: {error}"
        changed = reason != self.failure
        if changed:
            log.error(
                "store: commit of %d readings failed: %s; keeping them in memory and retrying",
                pending,
                error,
            )
        self.failure = reason
        if changed:
            # A failing store is not congested: drivers paused before the failure must
            # hear of it now, not at the next commit that succeeds.
            self._hand_over(Outcome([], self.last_seq, []))

    def _check_free_space(self) -> None:
        try:
            st = os.statvfs(self.path.parent)
        except OSError as e:
            error = f"cannot read free space of {self.path.parent}: {e}"
            if error != self._free_space_error:
                log.warning("store: %s", error)
            self.free_bytes, self._free_space_error = None, error
            return
        self.free_bytes = st.f_bavail * st.f_frsize
        self._free_space_error = None

    def _notice_outside_changes(self) -> None:
        """Re-read what the ``queue`` commands may have changed while we run."""
        version = self._pragma("data_version")
        if version == self._data_version:
            return
        self._data_version = version
        on_disk = dict(self._conn.execute("SELECT name, seq FROM cursors"))
        for name, seq in on_disk.items():
            if name not in self.cursors:
                self.cursors[name] = seq
            elif seq < self.cursors[name]:
                log.warning(
                    "cursor %s was moved back to %d outside the gateway; "
                    "the consumer resends from there after its next start",
                    name,
                    seq,
                )
        floor = self._active_floor(self.cursors, self.active)
        self.depth = self._count_after(floor) if floor is not None else 0
        self._measure()

    def _hand_over(self, outcome: Outcome) -> None:
        if self._loop is None or self._deliver is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, outcome)
        except RuntimeError:
            # The event loop is gone (the process is exiting without close()).
            log.debug("store: event loop closed; %d readings not announced", len(outcome.readings))


def _growth_bound(batch: _Batch, page_size: int) -> int:
    """More than the pages in use can have grown by in ``batch``'s transaction (bytes)."""
    rows = sum(len(payload) + len(device) for _, _, device, payload in batch.rows)
    rows += sum(len(d.raw) + len(d.reason) + len(d.device) for d in batch.dead_letters)
    count = len(batch.rows) + len(batch.dead_letters) + len(batch.unencodable)
    rows += sum(len(d.raw) + len(d.reason) for d in batch.unencodable)
    return 2 * (rows + count * ROW_OVERHEAD) + COMMIT_PAGES * page_size
