"""The one thread that writes the database: natural group commit.

Each turn the writer takes everything waiting (samples, dead letters, cursor
registrations and acks), commits it in ONE transaction and loops. One reading
alone is committed at once; under load, readings pile up while a commit runs
and the next transaction takes them all, so batches grow by themselves and no
timer is needed. Bounds and retention run in the same transaction, with work
proportional to what was inserted, so the log never falls behind its bounds.

When a commit fails (disk full, database busy), nothing is lost that fits in
memory: the samples stay in a bounded buffer, the store reports itself degraded,
and the writer retries with backoff until the disk has room. A damaged database,
wherever it shows (a commit, retention, a read, the background check), is moved
aside and the writer carries on with a fresh one, its buffered samples and seqs
intact (see ``_start_afresh``).

This module is the thread loop: taking from the ingress, the linger, retries and
backoff, failures and damage, and handing outcomes to the event loop. What one
transaction will do is planned in ``planner`` (no I/O); its SQL is in ``sql``.

Why it is longer than 500 lines: the loop's parts (taking, committing and settling,
retrying, moving a damaged database aside, closing, dying) all change the same state
(seqs, cursors, depth, totals, measurements), which only this thread assigns and the
event loop reads as plain attributes of ``Writer``. Split across modules, each part
would reach into the others' state. What does not need that state (planning, SQL)
lives in ``planner`` and ``sql``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import StoreClosedError, StoreError
from gateway.reading import DeadLetter, StoredReading
from gateway.settings import StoreSettings
from gateway.store import planner, schema, sql, trim
from gateway.store.files import fsync_dir
from gateway.store.ingress import (
    DEAD_LETTER_WEIGHT,
    Ack,
    CursorRequest,
    Damaged,
    Flush,
    Ingress,
    Register,
    Release,
    Request,
    Stop,
)
from gateway.store.lock import DataDirLock
from gateway.store.planner import LogState, Totals, TransactionPlan, Waiting, growth_bound
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
# Dead letters kept in the database; the oldest go first.
MAX_DEAD_LETTERS = 10_000
# Rows retention may delete per turn, at least; more when more was inserted.
RETENTION_CHUNK = 5_000
# Bounds and retention are checked at most this often when under the byte bound.
MAINTENANCE_INTERVAL = 0.25
# Idle wake-up, so retention and the free-space check run without traffic.
IDLE_WAKE = 1.0
RETRY_MIN = 0.05
RETRY_MAX = 2.0
# A stop gives a failing disk this many more attempts before giving up.
STOP_ATTEMPTS = 3
# How long /healthz and the status line say that a damaged database was moved aside
# (the counter in /metrics stays).
MOVED_ASIDE_NOTICE = 3600.0


class Failing(enum.Enum):
    """What keeps commits from succeeding."""

    DISK_FULL = "disk full"
    BUSY = "database busy"
    WRITE = "write failed"
    DAMAGED = "database damaged"  # and a fresh one could not be started
    STOPPED = "writer stopped"  # by a bug: nothing more is accepted


@dataclass(frozen=True, slots=True)
class Failure:
    kind: Failing
    message: str  # for health and the status line

    @classmethod
    def of(cls, kind: Failing, detail: object | None = None) -> Failure:
        return cls(kind, kind.value if detail is None else f"{kind.value}: {detail}")


# A request's future and what to resolve it with (a value or an error).
Result = tuple[asyncio.Future[int], int | BaseException]


@dataclass(slots=True)
class Outcome:
    """What one turn produced, handed to the event loop in one callback."""

    readings: list[StoredReading]
    last_seq: int
    results: list[Result] = field(default_factory=list)


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
        opener: Callable[[], sqlite3.Connection],
        wal_lost: bool = False,
    ) -> None:
        self.path = path
        self.settings = settings
        self._conn = conn
        self._opener = opener
        self._floor = floor
        self._lock = lock
        self._grace_until = time.monotonic() + startup_grace
        self.ingress = Ingress(MAX_UNSAVED)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliver: Callable[[Outcome], None] | None = None
        self._thread: threading.Thread | None = None

        meta = schema.read_meta(conn)
        self.last_seq = sql.begin_run(
            conn, path, meta, floor, durability=settings.durability, wal_lost=wal_lost
        )
        self._dropped_base = meta.get(schema.META_DROPPED, 0)
        self._dropped_here = 0  # by the writer since open
        self.dead_letters = meta.get(schema.META_DEAD_LETTERS, 0)
        # Dead letters whose raw bytes were lost (counted in dead_letters all the same).
        self.dead_letters_lost = meta.get(schema.META_DEAD_LETTERS_LOST, 0)
        # Which database the writer has open: bumped when a damaged one is moved aside.
        self.generation = 1
        self._damage: str | None = None  # found damaged; moved aside at the next turn
        self.moved_aside = 0
        self.moved_aside_at: float | None = None
        self.moved_aside_reason: str | None = None
        self._moved_aside_path: Path | None = None
        self._closed_conn = False  # the damaged database's connection is closed
        self._moved = False  # and the file moved aside
        self.cursors = sql.cursors(conn)
        self.active: set[str] = set()
        # Consumers retention does not wait for: registered (``loose``) or about to be.
        self.best_effort: set[str] = set()
        self.loose: set[str] = set()
        self.depth = 0
        self.oldest_unsent_ts: float | None = None
        self.page_size = sql.pragma(conn, "page_size")
        self.page_count = 0
        # Pages in use (bytes) at the last exact measurement, and an upper bound of what
        # commits since then may have added: max_bytes is checked against their sum and
        # measured exactly (two PRAGMAs) only when that sum reaches it.
        self._used = 0
        self._growth = 0
        self.free_bytes: int | None = None
        self._free_space_error: str | None = None
        # The file the connection has open, to notice it replaced or removed under us.
        self._file = _file_id(path)
        self.commits = 0
        self.committed_readings = 0
        self.commit_seconds = 0.0
        self._failure: Failure | None = None
        self.stopped = False  # the thread has ended
        # Set from the event loop: None while nobody watches the live stream; while
        # clients watch, commits are spaced by this instead (see ``_linger``).
        self.watched_spacing: float | None = None
        self.store_full = False
        self.settled = 0  # samples committed or dropped by the writer
        # When the writer last came round its loop. The watchdog reads it to tell a
        # wedged writer (a restart cures it) from a degraded one (a restart does not).
        self.heartbeat = time.monotonic()

        self._waiting = Waiting(
            max_samples=MAX_UNSAVED,
            max_dead_letters=MAX_UNSAVED_DEAD_LETTERS,
            max_batch=MAX_BATCH,
        )
        self.dead_rejected_seen = 0  # of ingress.dead_rejected, counted in dead_letters
        self._requests: list[CursorRequest] = []
        self._flushes: list[Flush] = []
        self._last_start = 0.0  # perf_counter when the last transaction began
        self._inserted_since_maintenance = 0
        self._next_maintenance = 0.0
        self._data_version = sql.pragma(self._conn, "data_version")
        # Totals as last written to the meta table: unchanged ones are not rewritten.
        self._written = self._counted()
        self._measure()
        self._measure_oldest()
        self._check_free_space()

    # -- state the loop reads ------------------------------------------------

    @property
    def dropped(self) -> int:
        return self._dropped_base + self._dropped_here + self.ingress.rejected

    @property
    def failure(self) -> str | None:
        """Why commits fail, or None while they succeed."""
        return None if self._failure is None else self._failure.message

    def _failing(self, kind: Failing) -> bool:
        return self._failure is not None and self._failure.kind is kind

    @property
    def bytes(self) -> int:
        return self.page_count * self.page_size

    @property
    def degraded(self) -> str | None:
        reasons = []
        if self.failure is not None:
            reasons.append(self.failure)
        at = self.moved_aside_at
        if at is not None and time.time() - at < MOVED_ASIDE_NOTICE:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
            reasons.append(
                f"database damaged ({self.moved_aside_reason}): moved aside to "
                f"{self._moved_aside_path} at {stamp}; a fresh log was started"
            )
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
            self._died(e)
            return
        self._finish(stop)

    def _died(self, error: BaseException) -> None:
        """The loop ended by a bug: refuse input from now on, count what is lost, fail
        every caller, and say so (health, the watchdog via ``failure``)."""
        self.ingress.closed = True
        failure = Failure.of(Failing.STOPPED, repr(error))
        gone = self._waiting.drain()
        lost = gone.samples
        lost_dead = gone.dead_letters
        requests: list[Request] = [*self._requests, *self._flushes]
        for item in self.ingress.take(0):
            if isinstance(item, Request):
                requests.append(item)
            elif isinstance(item, DeadLetter):
                lost_dead += 1
            elif not isinstance(item, Damaged):
                lost += len(item)
        self._dropped_here += lost
        self.dead_letters += lost_dead
        self.dead_letters_lost += lost_dead
        self.settled = self.ingress.submitted
        log.critical(
            "store writer gone: %d readings and %d dead letters lost; nothing more is accepted",
            lost,
            lost_dead,
        )
        try:
            # Best effort: the totals survive the restart that must follow.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            sql.write_meta(self._conn, self._totals())
        except sqlite3.Error as e:
            log.error("store: cannot record what was lost: %s", e)
        self._failure = failure
        self.stopped = True
        error_out = StoreError(failure.message)
        self._hand_over(Outcome([], self.last_seq, [(r.future, error_out) for r in requests]))
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._lock.release()

    def _totals(self) -> list[tuple[str, int]]:
        return [
            (schema.META_DROPPED, self.dropped),
            (schema.META_DEAD_LETTERS, self.dead_letters),
            (schema.META_DEAD_LETTERS_LOST, self.dead_letters_lost),
        ]

    def _turns_until_stopped(self) -> Stop:
        retry_delay = RETRY_MIN
        stop: Stop | None = None
        failed_stops = 0
        while True:
            self.heartbeat = time.monotonic()
            if self._damage is not None and not self._closed_conn:
                timeout: float | None = 0.0
            elif self.failure is not None:
                timeout = retry_delay
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
        lost = len(self._waiting.samples)
        lost_dead = len(self._waiting.dead_letters)
        if lost or lost_dead:
            log.error(
                "store closed with %d readings and %d dead letters that could not be committed",
                lost,
                lost_dead,
            )
            self._dropped_here += lost
            self.dead_letters += lost_dead
            self.dead_letters_lost += lost_dead
            try:
                sql.write_meta(self._conn, self._totals())
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
            # The database's copy of the floor first: it stands in for a lost seq.floor.
            sql.write_meta(self._conn, [(schema.META_RESERVED, self.last_seq)])
            # Only once the WAL and the database are synced may the floor say where
            # seqs stop.
            if sql.checkpoint_all(self._conn) and self._damage is None:
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
        if not self._waiting.samples or self._requests or self._flushes or self.failure is not None:
            return 0.0
        spacing = self.settings.commit_spacing
        if self.watched_spacing is not None:
            spacing = min(spacing, self.watched_spacing)
        return max(0.0, self._last_start + spacing - time.perf_counter())

    def _has_work(self) -> bool:
        return bool(
            self._waiting.has_data or self._requests or self._flushes or self._damage is not None
        )

    def _take(self, timeout: float | None) -> Stop | None:
        stop = None
        ingress = self.ingress
        items = ingress.take(timeout)
        refused = ingress.dead_rejected - self.dead_rejected_seen
        if refused:
            # Refused at the door (too many waiting): counted and persisted from here.
            self.dead_rejected_seen += refused
            self.dead_letters += refused
            self.dead_letters_lost += refused
        for item in items:
            if isinstance(item, DeadLetter):
                self._waiting.add_dead_letter(item)
                ingress.dead_taken += 1
                continue
            if isinstance(item, Damaged):
                if item.generation == self.generation and self._damage is None:
                    self._damage = item.reason
                continue
            if isinstance(item, Flush):
                item.target = self.ingress.taken
                self._flushes.append(item)
            elif isinstance(item, Ack):
                if item.seq > self.last_seq:
                    error = StoreError(f"ack of {item.name} to {item.seq} beyond last seq")
                    self._hand_over(Outcome([], self.last_seq, [(item.future, error)]))
                    continue
                self._waiting.add_ack(item.name, item.seq)
                self._requests.append(item)
            elif isinstance(item, Register):
                self._take_register(item)
            elif isinstance(item, Release):
                self._release(item)
            elif isinstance(item, Stop):
                stop = item
            elif not isinstance(item, Request):
                self._waiting.add_samples(item)
                self.ingress.taken += len(item)
        overflowed = self._waiting.bound(self.settings.overflow)
        self._dropped_here += overflowed.samples
        self.settled += overflowed.samples
        # A dead letter beyond the bound has lost its raw bytes but still counts
        # (persisted with the next commit), as those beyond the newest rows kept do.
        self.dead_letters += overflowed.dead_letters
        self.dead_letters_lost += overflowed.dead_letters
        return stop

    # -- consumers (docs/store.md, "Consumers") -------------------------------------

    def _take_register(self, item: Register) -> None:
        name = item.name
        if item.best_effort:
            self.best_effort.add(name)
        else:
            self.best_effort.discard(name)
        if name not in self.cursors:
            # Created and moved to where it starts in the same transaction.
            start = self.last_seq if item.start_now else min(item.start_at, self.last_seq)
            if start > 0:
                self._waiting.add_ack(name, start)
        self._waiting.add_register(name)
        self._requests.append(item)

    def _release(self, item: Release) -> None:
        name = item.name
        result: int | BaseException = self.cursors.get(name, 0)
        try:
            sql.delete_cursor(self._conn, name)
        except sqlite3.Error as e:
            result = StoreError(f"cannot release the cursor {name}: {e}")
        else:
            self.cursors.pop(name, None)
            self.active.discard(name)
            self.loose.discard(name)
            self.best_effort.discard(name)
            self._waiting.forget(name)
            floor = planner.active_floor(self.cursors, self.active)
            self.depth = sql.count_after(self._conn, floor) if floor is not None else 0
        self._hand_over(Outcome([], self.last_seq, [(item.future, result)]))

    @property
    def pending_weight(self) -> int:
        """Samples and dead letters put and not yet settled, as the congestion marks
        weigh them (read from the event loop)."""
        ingress = self.ingress
        dead = ingress.dead_submitted - ingress.dead_taken + len(self._waiting.dead_letters)
        return ingress.submitted - self.settled + DEAD_LETTER_WEIGHT * dead

    # -- one turn: one transaction --------------------------------------------

    def _turn(self) -> bool:
        """Commit what is waiting (and any due upkeep); False if the commit failed."""
        if self._damage is not None and not self._start_afresh():
            return False
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
            if self._replaced() and not self._start_afresh():
                return False
        # While commits fail, acks and upkeep are committed on their own first.
        failing = self.failure is not None and self._waiting.has_data
        if failing and not self._attempt(self._waiting.upkeep(), maintenance=True):
            return False
        upkeep_due = maintenance or self.failure is not None
        while True:
            plan = self._waiting.plan()
            if self._attempt(plan, upkeep_due):
                self._waiting.grow()
                return True
            if not self._failing(Failing.DISK_FULL) or not self._waiting.shrink(plan):
                return False

    def _attempt(self, plan: TransactionPlan, maintenance: bool) -> bool:
        started = self._last_start = time.perf_counter()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                sql.run(
                    self._conn,
                    plan,
                    self._log_state(),
                    self.settings,
                    self._floor,
                    maintenance=maintenance,
                    keep_dead_letters=MAX_DEAD_LETTERS,
                )
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk).
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as e:
            self._failed(e, len(plan.samples))
            return False
        self._committed(plan, time.perf_counter() - started, maintenance)
        return True

    def _log_state(self) -> LogState:
        cursors = self.cursors
        if self.loose:
            # Best-effort cursors hold nothing, not even in the grace after a start.
            cursors = {n: s for n, s in cursors.items() if n not in self.loose}
        return LogState(
            last_seq=self.last_seq,
            cursors=cursors,
            active=self.active,
            depth=self.depth,
            in_grace=time.monotonic() < self._grace_until,
            page_size=self.page_size,
            used_bound=self._used + self._growth,
            retention_chunk=max(RETENTION_CHUNK, 2 * self._inserted_since_maintenance),
            totals=self._counted(),
            written=self._written,
        )

    def _counted(self) -> Totals:
        return Totals(self.dropped, self.dead_letters, self.dead_letters_lost, self._floor.value)

    # -- after the transaction -----------------------------------------------

    def _committed(self, plan: TransactionPlan, elapsed: float, maintenance: bool) -> None:
        results: list[Result] = []
        n = len(plan.samples)
        self._waiting.settle(plan)
        if plan.last_seq:
            self.last_seq = plan.last_seq
        for name in plan.registers:
            self.cursors.setdefault(name, 0)
            if name in self.best_effort:
                self.active.discard(name)
                self.loose.add(name)
            else:
                self.loose.discard(name)
                self.active.add(name)
        for name, seq in plan.acks.items():
            self.cursors[name] = max(self.cursors.get(name, 0), seq)
        self.depth = max(0, self.depth + plan.depth_delta) if self.active else 0
        self._dropped_here += plan.dropped
        self.dead_letters += len(plan.dead_letters) + len(plan.unencodable)
        self._written = Totals(
            plan.dropped_total, self.dead_letters, self.dead_letters_lost, self._floor.value
        )
        if plan.samples:
            self.store_full = plan.rejected
        self.settled += n
        self.commits += 1
        self.committed_readings += len(plan.rows)
        self.commit_seconds += elapsed
        self._inserted_since_maintenance += len(plan.rows)
        if maintenance:
            self._inserted_since_maintenance = 0
        if self.failure is not None and not self._waiting.has_data:
            log.warning("store recovered: commits succeed again (%s)", self.failure)
            self._failure = None
        if maintenance:
            self._measure()
        else:
            self._growth += growth_bound(plan, self.page_size)
        if maintenance or plan.acks or plan.registers or plan.trimmed:
            # The oldest unsent reading changes only when the floor moves or rows go;
            # a commit that only appends keeps it (or sets it, at depth 0).
            self._measure_oldest()
        elif self.oldest_unsent_ts is None and plan.rows and self.active:
            self.oldest_unsent_ts = plan.rows[0][1]

        remaining: list[CursorRequest] = []
        for req in self._requests:
            done = req.name not in self._waiting.acks
            if isinstance(req, Register):
                done = done and (req.name in self.active or req.name in self.loose)
            if done:
                results.append((req.future, self.cursors.get(req.name, 0)))
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
        self._hand_over(Outcome(plan.readings, self.last_seq, results))

    def _measure(self) -> None:
        """The file's pages and the pages in use, exactly (at maintenance, not per commit)."""
        try:
            self.page_count = sql.pragma(self._conn, "page_count")
            self._used = trim.used_bytes(self._conn, self.page_size)
            self._growth = 0
        except sqlite3.Error as e:
            # Only the figures go stale (the byte bound then measures at every commit).
            self._growth = self.settings.max_bytes
            self._noticed(e)

    def _measure_oldest(self) -> None:
        try:
            self._measure_oldest_now()
        except sqlite3.Error as e:
            # Only the figure goes stale; the commit itself has succeeded.
            self._noticed(e)

    def _noticed(self, error: sqlite3.Error) -> None:
        if schema.is_corruption(error):
            self._damage = str(error)
        else:
            log.warning("store: cannot measure the database: %s", error)

    # -- a damaged database ------------------------------------------------------

    def _start_afresh(self) -> bool:
        """Move the damaged database aside and go on with a fresh one; False if that
        failed (retried with backoff, the store degraded meanwhile).

        Samples and dead letters not yet committed stay in memory and go into the new
        database; seqs continue above the last one handed out; every known cursor is
        carried over, so uplinks deliver from the new log without a restart. Unsent
        readings left in the moved file are counted in ``dropped``.
        """
        reason = self._damage or "damaged"
        try:
            # Each step once, however often a failing disk makes this start over.
            if not self._closed_conn:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._closed_conn = True
            if not self._moved:
                aside = schema.move_aside(self.path)
                self._moved = True
                self._note_moved_aside(aside, reason, unsent=self.depth)
            self._adopt(self._opener())
        except (sqlite3.Error, OSError) as e:
            message = f"{Failing.DAMAGED.value} ({reason}); cannot start a fresh one: {e}"
            failure = Failure(Failing.DAMAGED, message)
            if failure != self._failure:
                log.error("store: %s", message)
            self._failure = failure
            return False
        self._damage = None
        self._closed_conn = False
        self._moved = False
        if self._failing(Failing.DAMAGED):
            self._failure = None
        return True

    def note_moved_aside(self, aside: Path, reason: str) -> None:
        """Record a damaged database moved aside when the store opened (what it held
        unsent is not known: it could not be read)."""
        self._note_moved_aside(aside, reason, unsent=None)

    def _note_moved_aside(self, aside: Path, reason: str, unsent: int | None) -> None:
        if unsent:
            self._dropped_here += unsent
        self.moved_aside += 1
        self.moved_aside_at = time.time()
        self.moved_aside_reason = reason
        self._moved_aside_path = aside
        left = "unsent readings" if unsent is None else f"{unsent} unsent readings"
        log.error(
            "store: %s is damaged (%s); moved it aside to %s and started a fresh log; "
            "%s stay in the moved file; new seqs continue above %d",
            self.path.name,
            reason,
            aside.name,
            left,
            self.last_seq,
        )

    def _adopt(self, conn: sqlite3.Connection) -> None:
        """Take up a fresh database: this run's seqs, totals and cursors go into it."""
        try:
            meta = [
                (schema.META_LAST_SEQ, self.last_seq),
                (schema.META_RESERVED, self._floor.value),
                (schema.META_EPOCH, self._floor.epoch),
                *self._totals(),
            ]
            sql.adopt(conn, meta, self.cursors)
            # The fresh file's name is on disk before anything is acknowledged from it.
            fsync_dir(self.path.parent)
        except (sqlite3.Error, OSError):
            conn.close()
            raise
        self._conn = conn
        self._file = _file_id(self.path)
        self.generation += 1
        self.depth = 0
        self.oldest_unsent_ts = None
        self._written = self._counted()
        self._inserted_since_maintenance = 0
        self._next_maintenance = 0.0
        self.page_size = sql.pragma(self._conn, "page_size")
        self._data_version = sql.pragma(self._conn, "data_version")
        self._measure()

    def _measure_oldest_now(self) -> None:
        floor = planner.active_floor(self.cursors, self.active)
        if floor is None:
            self.oldest_unsent_ts = None
        else:
            self.oldest_unsent_ts = sql.first_ts_after(self._conn, floor)

    def _failed(self, error: sqlite3.Error | OSError, pending: int) -> None:
        if schema.is_disk_full(error):
            reason = Failure.of(Failing.DISK_FULL)
        elif isinstance(error, sqlite3.Error) and schema.is_corruption(error):
            # Moved aside at once (the next turn): nothing to retry on this file.
            self._damage = str(error)
            return
        elif isinstance(error, sqlite3.Error) and schema.is_busy(error):
            reason = Failure.of(Failing.BUSY)
        else:
            reason = Failure.of(Failing.WRITE, error)
        changed = reason != self._failure
        if changed:
            log.error(
                "store: commit of %d readings failed: %s; keeping them in memory and retrying",
                pending,
                error,
            )
        self._failure = reason
        if changed:
            # A failing store is not congested: drivers paused before the failure must
            # hear of it now, not at the next commit that succeeds.
            self._hand_over(Outcome([], self.last_seq, []))

    def _replaced(self) -> bool:
        """True (and the database taken as damaged) when the file under the log's name
        is no longer the one being written: restored over or removed while open,
        commits would go into a file no start will see again."""
        if self._damage is not None:
            return False
        try:
            if _file_id(self.path) == self._file:
                return False
        except OSError:
            # Unreadable now (a failing card) is not proof of a replacement.
            return False
        self._damage = f"{self.path.name} was replaced or removed while open"
        return True

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
        version = sql.pragma(self._conn, "data_version")
        if version == self._data_version:
            return
        self._data_version = version
        on_disk = sql.cursors(self._conn)
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
        floor = planner.active_floor(self.cursors, self.active)
        self.depth = sql.count_after(self._conn, floor) if floor is not None else 0
        self._measure()

    def _hand_over(self, outcome: Outcome) -> None:
        if self._loop is None or self._deliver is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, outcome)
        except RuntimeError:
            # The event loop is gone (the process is exiting without close()).
            log.debug("store: event loop closed; %d readings not announced", len(outcome.readings))


def _file_id(path: Path) -> tuple[int, int] | None:
    """The file system's identity of the file at ``path`` (None if it is gone)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)
