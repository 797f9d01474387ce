"""The background integrity check: finds damage in pages nothing has read yet.

A damaged page in the middle of the log (what an SD card produces) shows only when
something reads it: retention, a read-back for an uplink far behind, a replay. Soon
after the store opens, this runs SQLite's ``PRAGMA quick_check`` (every b-tree page,
the freelist, record formats; not the costlier index cross-checks) on a connection of
its own in its own thread: a WAL reader blocks neither the writer nor the reads, and
opening the store does not wait for it. Damage it finds is reported like damage a
read finds, and the writer moves the database aside.

It is time-boxed: a read transaction held open keeps checkpoints from recycling the
WAL, so a check that outlasts ``TIME_LIMIT`` (a very large log on a very slow card) is
given up and says so, rather than let the WAL grow without bound. It runs again every
``INTERVAL`` while the gateway runs, so that a page damaged in a log kept for months
is found without waiting for retention to reach it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.store import schema

log = logging.getLogger(__name__)

# Give up a check that takes longer than this.
TIME_LIMIT = 600.0
# Between the end of one check and the start of the next.
INTERVAL = 24 * 3600.0
# SQLite virtual-machine steps between looks at the clock and the stop flag.
PROGRESS_STEPS = 10_000


class IntegrityCheck:
    def __init__(
        self,
        path: Path,
        generation: Callable[[], int],
        report: Callable[[int, str], None],
        time_limit: float = TIME_LIMIT,
        interval: float = INTERVAL,
    ) -> None:
        self._path = path
        self._generation = generation
        self._report = report
        self._time_limit = time_limit
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.completed = 0  # checks run to the end
        self.result: str | None = None  # "ok", what the last check found, or why it stopped

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="store-check", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Interrupt a check under way and wait for its thread (blocking)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._check_once()
            self._stopping.wait(self._interval)

    def _check_once(self) -> None:
        generation = self._generation()
        started = time.monotonic()
        deadline = started + self._time_limit
        try:
            conn = sqlite3.connect(f"{self._path.as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as e:
            self.result = f"not run: {e}"
            log.warning("store: integrity check not run: %s", e)
            return
        try:
            conn.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")

            def interrupt() -> int:
                return int(self._stopping.is_set() or time.monotonic() > deadline)

            conn.set_progress_handler(interrupt, PROGRESS_STEPS)
            rows = [str(row[0]) for row in conn.execute("PRAGMA quick_check(20)")]
        except sqlite3.Error as e:
            if self._stopping.is_set():
                self.result = "stopped"
                return
            if schema.is_corruption(e):
                self._found(generation, str(e))
                return
            if time.monotonic() > deadline:
                self.result = f"given up after {self._time_limit:.0f} s"
                log.warning(
                    "store: integrity check given up after %.0f s (the log is large for "
                    "this disk); damage will still show where it is read",
                    self._time_limit,
                )
                return
            self.result = f"failed: {e}"
            log.warning("store: integrity check failed: %s", e)
            return
        finally:
            conn.close()
        self.completed += 1
        if rows == ["ok"]:
            self.result = "ok"
            log.info("store: integrity check passed in %.1f s", time.monotonic() - started)
        else:
            self._found(generation, "; ".join(rows[:3]))

    def _found(self, generation: int, problems: str) -> None:
        self.result = problems
        self._report(generation, f"integrity check: {problems}")
