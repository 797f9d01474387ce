"""What the gateway committed, what the cloud received, and the checks between the two.

The ledger of committed readings is read from the database itself, with the gateway
stopped: before each damage (the file as it was before its page was overwritten) and
at the end. The campaign keeps every reading for the whole run (`[store] history`
longer than the run), so those reads hold every reading the gateway committed.

Checks:

- **lost**: a committed reading that never reached the subscriber. Excluded: readings
  whose only copy was in a file the campaign damaged and that the broker had not
  acknowledged when the file was damaged (seq above the uplink's cursor in that file).
  Nothing more may be lost, a damaged page included.
- **reused**: one seq with two different contents, among the copies delivered and the
  database reads (a fresh database counting again from below the old seqs shows here).
- **out of order**: a device's counter values going back as seq goes up.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.mosquitto import Received


def canonical(reading: object) -> str:
    return json.dumps(reading, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class DatabaseRead:
    rows: dict[int, str]  # seq -> canonical reading
    cursor: int | None  # the lowest consumer cursor, None without consumers
    error: str | None = None  # why not every row could be read


def read_database(path: Path, after: int = 0) -> DatabaseRead:
    """Every reading in the file (with seq > ``after`` if the whole file cannot be read)."""
    uri = f"file:{path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        cursor_row = db.execute("SELECT min(seq) FROM cursors").fetchone()
        cursor = None if cursor_row is None else cursor_row[0]
        try:
            rows = db.execute("SELECT seq, payload FROM readings").fetchall()
            error = None
        except sqlite3.DatabaseError as e:
            error = f"{path.name}: {e}; read seqs above {after} only"
            rows = db.execute(
                "SELECT seq, payload FROM readings WHERE seq > ?", (after,)
            ).fetchall()
    return DatabaseRead({seq: canonical(json.loads(p)) for seq, p in rows}, cursor, error)


def integrity(path: Path) -> str:
    """`PRAGMA integrity_check` of a file, first line ("ok" when sound)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    except sqlite3.DatabaseError as e:
        return f"cannot check: {e}"


@dataclass(frozen=True, slots=True)
class DamagedFile:
    seqs: frozenset[int]
    unacked: frozenset[int]  # above the uplink's cursor: their only copy was this file


@dataclass(frozen=True, slots=True)
class Reuse:
    seq: int
    first: str
    other: str


@dataclass
class Ledger:
    committed: dict[int, str] = field(default_factory=dict)
    damaged: list[DamagedFile] = field(default_factory=list)
    reused: list[Reuse] = field(default_factory=list)
    read_errors: list[str] = field(default_factory=list)

    def add(self, read: DatabaseRead) -> None:
        if read.error:
            self.read_errors.append(read.error)
        for seq, content in read.rows.items():
            first = self.committed.setdefault(seq, content)
            if first != content:
                self.reused.append(Reuse(seq, first, content))

    def add_damaged(self, read: DatabaseRead) -> DamagedFile:
        """The file as it was just before the campaign damaged it."""
        self.add(read)
        cursor = read.cursor if read.cursor is not None else 0
        damaged = DamagedFile(frozenset(read.rows), frozenset(s for s in read.rows if s > cursor))
        self.damaged.append(damaged)
        return damaged

    @property
    def excluded(self) -> frozenset[int]:
        return frozenset().union(*(d.unacked for d in self.damaged))

    @property
    def expected(self) -> set[int]:
        """The seqs the subscriber must have."""
        return set(self.committed) - self.excluded


@dataclass(frozen=True, slots=True)
class Verdict:
    committed: int
    delivered: int
    duplicates: int  # copies beyond the first (at least once allows them)
    lost: list[int]
    excluded: int
    excluded_arrived: int
    reused: list[Reuse]
    out_of_order: list[str]
    read_errors: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.reused or self.out_of_order or self.read_errors)


def judge(ledger: Ledger, telemetry: Sequence[Received]) -> Verdict:
    """The checks, over every telemetry message the subscriber received."""
    first: dict[int, str] = {}
    values: dict[int, tuple[str, float]] = {}
    reused = list(ledger.reused)
    copies = 0
    for message in telemetry:
        for reading in message.json()["readings"]:
            copies += 1
            seq = reading["seq"]
            content = canonical(reading)
            seen = first.setdefault(seq, content)
            if seen != content:
                reused.append(Reuse(seq, seen, content))
            values.setdefault(seq, (reading["device"], reading["value"]))
    for seq, content in first.items():
        stored = ledger.committed.get(seq)
        if stored is not None and stored != content:
            reused.append(Reuse(seq, stored, content))
    by_device: dict[str, list[float]] = defaultdict(list)
    for seq in sorted(values):
        device, value = values[seq]
        by_device[device].append(value)
    excluded = ledger.excluded
    return Verdict(
        committed=len(ledger.committed),
        delivered=len(first),
        duplicates=copies - len(first),
        lost=sorted(ledger.expected - first.keys()),
        excluded=len(excluded),
        excluded_arrived=len(excluded & first.keys()),
        reused=reused,
        out_of_order=[d for d, v in sorted(by_device.items()) if v != sorted(v)],
        read_errors=list(ledger.read_errors),
    )
