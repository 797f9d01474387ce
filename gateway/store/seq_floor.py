"""What keeps a seq from being handed out twice, outside the database.

Cloud consumers dedupe on (gateway id, seq): if a damaged database were replaced by
a fresh one counting from 1 again, or an older copy restored, new readings would be
discarded as duplicates of old ones. Two small files in the data directory:

- ``seq.floor``: no seq above its value has ever been handed out. Before the store
  hands out a seq above it, it raises it by a whole block (a hi-lo allocator), so the
  file is written once per ``BLOCK`` seqs, not once per commit. A clean close lowers
  it to the last seq handed out.
- ``seq.run``: present while a store has the data directory open: the run's id and
  its durability. Found at a start, it says the last stop was not clean.

The rule that uses them is ``SeqFloor.base`` (see ``docs/store.md``, *Seqs: the rule*).
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import Durability
from gateway.store.files import remove_durably, write_durably

log = logging.getLogger(__name__)

BLOCK = 100_000
# No gateway hands out this many seqs (at a million readings a second it would take
# 285 years), and beyond it JSON consumers reading numbers as float64 could no longer
# tell seqs apart: a floor above it is damage, not history.
MAX_FLOOR = 2**53
# What ``_write`` puts in the file; anything else (``int()`` also takes signs, spaces,
# "_" and other scripts' digits) is damage.
_MAX_FILE = 64
_FLOOR_TEXT = re.compile(rb"[0-9]{1,16}\n?")
RUN_NAME = "seq.run"
# What a run file may say; anything else is read as not known.
_DURABILITIES: dict[str, Durability] = {"full": "full", "normal": "normal"}


@dataclass(frozen=True, slots=True)
class Run:
    """A run of the store that ended without a clean close."""

    epoch: int
    durability: Durability | None  # None: the file does not say (torn or damaged)


class SeqFloor:
    """``<data_dir>/seq.floor``: no seq above ``value`` has ever been handed out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_path = path.with_name(RUN_NAME)
        # False when the file is missing or unreadable: the store then falls back on
        # the copies of the floor kept in the database (see ``docs/store.md``).
        self.found = False
        self.value = self._read()
        self.unclean = self._read_run()
        self.epoch = 0  # this run's, once begun

    def _read(self) -> int:
        try:
            data = _head(self.path)
        except FileNotFoundError:
            return 0
        except OSError as e:
            # An unreadable floor is no worse than none (below), and must not keep the
            # gateway from starting: replacing the file is what repairs it.
            log.warning("store: cannot read %s (%s); taken as lost", self.path.name, e)
            return 0
        value = int(data) if _FLOOR_TEXT.fullmatch(data) else -1
        if not 0 <= value <= MAX_FLOOR:
            # A torn or damaged floor is no worse than none: the database's own
            # last_seq and reserve still hold, and the next write replaces the file.
            log.warning("store: %s is damaged (%r); taken as lost", self.path.name, data[:40])
            return 0
        self.found = True
        return value

    def _read_run(self) -> Run | None:
        """The run that had the directory open and did not close it cleanly, if any."""
        try:
            text = _head(self.run_path).decode("ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return Run(0, None)
        fields = text.split()
        # An epoch is below 2^62 (19 digits); more would also be too many for int().
        if len(fields) != 2 or not fields[0].isdigit() or len(fields[0]) > 19:
            return Run(0, None)
        return Run(int(fields[0]), _DURABILITIES.get(fields[1]))

    def base(self, db_last: int, db_reserved: int, db_epoch: int, wal_lost: bool) -> int:
        """The highest seq to count as handed out, so that the next one is new.

        Only a database the last run wrote with every commit fsynced (``full``), whose
        WAL lost no commit, is trusted to know its last seq exactly after a stop that
        was not clean; anything else continues above the floor (a gap, never a reuse).
        """
        run = self.unclean
        if (
            run is not None
            and run.durability == "full"
            and run.epoch != 0
            and run.epoch == db_epoch
            and not wal_lost
        ):
            return db_last
        return max(db_last, db_reserved, self.value)

    def begin_run(self, durability: Durability, at_least: int) -> int:
        """Mark the directory open by a new run (fsynced); returns the run's epoch."""
        if at_least > self.value:
            self._write(at_least)
        self.epoch = 1 + secrets.randbelow(2**62)
        write_durably(self.run_path, f"{self.epoch} {durability}\n")
        return self.epoch

    def reserve(self, seq: int) -> None:
        """Make sure seqs up to ``seq`` are below the floor (fsynced) before use."""
        if seq > self.value:
            self._write(seq + BLOCK)

    def settle(self, last_seq: int) -> None:
        """Lower the floor to ``last_seq``, the last seq handed out, once every commit is
        on disk (a clean close), and end the run: the next start continues right after
        it, not a block on."""
        if last_seq < self.value:
            self._write(last_seq)
        remove_durably(self.run_path)

    def _write(self, value: int) -> None:
        write_durably(self.path, f"{value}\n")
        self.value = value
        self.found = True


def _head(path: Path) -> bytes:
    """The start of a small file: both files hold a line of a few dozen bytes, and a
    damaged one may be any size."""
    with path.open("rb") as f:
        return f.read(_MAX_FILE)
