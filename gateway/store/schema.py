"""The database file: its tables, how a connection to it is opened, and corruption.

One file, ``readings.db``, in WAL mode so that readers (uplinks, the local server,
the ``queue`` commands) never block the writer. ``seq`` is the readings table's
INTEGER PRIMARY KEY, so rows are stored in seq order and every range read is a
b-tree walk.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.settings import Durability
from gateway.store.files import fsync_dir

# The log's file in the data directory (with its -wal and -shm companions).
DB_NAME = "readings.db"
SCHEMA_VERSION = 1

# How long a connection waits for another one's write lock (the ``queue`` commands
# take it for a short transaction while the gateway runs).
BUSY_TIMEOUT_MS = 5000

# The WAL file is reused from its start after each checkpoint; this caps what it
# keeps on disk after a burst.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024

# The page size of a new database (an existing one keeps its own). At a steady 1,000
# readings/s each commit rewrites the newest readings page (and the cursors page with an
# uplink's acknowledgement), and when a page fills the header and the parent page too:
# with 1 KiB pages those WAL frames dirty one or two of the kernel's 4 KiB pages per
# commit instead of up to five, about 45% fewer bytes written to the card per reading
# (docs/benchmarks.md).
PAGE_SIZE = 1024
# A checkpoint once the WAL holds this much, as SQLite's default (1,000 pages) does at
# 4 KiB pages; counted in pages, that default would checkpoint four times as often at
# 1 KiB and cost the writer about a fifth of its maximum rate.
WAL_AUTOCHECKPOINT_BYTES = 4 * 1024 * 1024

_DDL = """
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    device TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    device TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

# Keys of the meta table. The database's last seq is the higher of last_seq and the
# highest stored seq; last_seq is written by every transaction that deletes readings,
# so a seq is never handed out twice even when every row is deleted (and a commit that
# only appends does not rewrite the meta page).
META_LAST_SEQ = "last_seq"
META_DROPPED = "dropped"
META_DEAD_LETTERS = "dead_letters"
META_DEAD_LETTERS_LOST = "dead_letters_lost"
META_SCHEMA = "schema_version"
# The run (see seq_floor.SeqFloor.begin_run) that last opened this database.
META_EPOCH = "epoch"
# A copy of seq.floor as it was when seqs up to it were reserved (a clean close lowers
# it with the file): it stands in for the file if that is lost.
META_RESERVED = "seq_reserved"
UPSERT_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

# Primary result codes; errors carry extended codes whose low byte is the primary one.
_CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_FULL_CODES = frozenset({sqlite3.SQLITE_FULL})
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def connect(path: Path, durability: Durability) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with our pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # Closed if a pragma fails (WAL mode on a full disk): a writer trying again for a
    # fresh log would otherwise leave a descriptor open at each attempt.
    with _closed_on_error(conn):
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Only a file without tables takes it, so it goes before anything creates one.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = WAL")
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_BYTES // page_size}")
        synchronous = "FULL" if durability == "full" else "NORMAL"
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    return conn


@contextlib.contextmanager
def _closed_on_error(conn: sqlite3.Connection) -> Iterator[None]:
    try:
        yield
    except BaseException:
        conn.close()
        raise


def create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (META_SCHEMA, SCHEMA_VERSION)
        )
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def read_meta(conn: sqlite3.Connection) -> dict[str, int]:
    return {str(k): int(v) for k, v in conn.execute("SELECT key, value FROM meta")}


def _primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_corruption(error: sqlite3.Error) -> bool:
    return _primary_code(error) in _CORRUPTION_CODES


def is_busy(error: sqlite3.Error) -> bool:
    return _primary_code(error) in _BUSY_CODES


def is_disk_full(error: BaseException) -> bool:
    """SQLite's own "database or disk is full", or the OS's ENOSPC/EDQUOT."""
    if isinstance(error, sqlite3.Error):
        return _primary_code(error) in _FULL_CODES
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return False


_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24


def wal_last_commit(path: Path) -> int:
    """The index (from 1) of the last commit frame of the WAL's current generation, as the
    file holds it before SQLite recovers it; 0 without one. -1 when the file holds frames
    behind a header SQLite will not accept (it then ignores every frame).

    Opening the database recovers the WAL up to the first frame that fails its checksum
    and drops the rest. If a commit frame lies beyond what SQLite kept (``PRAGMA
    wal_checkpoint`` tells how many), committed transactions were lost: a damaged WAL,
    or a power cut that tore a transaction never acknowledged. Only frame headers are
    read, a few bytes per page.
    """
    wal = path.with_name(path.name + "-wal")
    try:
        f = wal.open("rb")
    except FileNotFoundError:
        return 0
    with f:
        header = f.read(_WAL_HEADER)
        size = wal.stat().st_size
        if len(header) < _WAL_HEADER:
            return 0
        magic, _version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", header)
        big = magic == _WAL_MAGIC[1]
        valid = magic in _WAL_MAGIC and page_size >= 512 and page_size & (page_size - 1) == 0
        if valid and _checksum(header[:24], big) != (c1, c2):
            valid = False
        if not valid:
            return -1 if size > _WAL_HEADER else 0
        frame_size = _FRAME_HEADER + page_size
        last = 0
        for index in range(1, (size - _WAL_HEADER) // frame_size + 1):
            f.seek(_WAL_HEADER + (index - 1) * frame_size)
            frame = f.read(_FRAME_HEADER)
            if len(frame) < _FRAME_HEADER:
                break
            _page, commit_size, s1, s2 = struct.unpack(">4I", frame[:16])
            if (s1, s2) == (salt1, salt2) and commit_size:
                last = index
        return last


def _checksum(data: bytes, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes) from zero."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def wal_frames(conn: sqlite3.Connection) -> int:
    """Frames in the WAL as SQLite holds it (after recovery); a passive checkpoint."""
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row[1]) if row is not None and row[1] is not None and row[1] >= 0 else 0


def move_aside(path: Path) -> Path:
    """Rename a corrupt database and its WAL/SHM files; they are kept for inspection.

    The directory is fsynced after the renames, so that after a power cut the damaged
    file is not back under the live name with a fresh log's WAL beside it.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(target.with_name(target.name + suffix))
    fsync_dir(path.parent)
    return target


def moved_aside(path: Path) -> list[Path]:
    """The databases moved aside from ``path`` so far (not their -wal/-shm files)."""
    return sorted(
        p
        for p in path.parent.glob(f"{path.name}.corrupt-*")
        if not p.name.endswith(("-wal", "-shm"))
    )


def highest_seq_in(path: Path) -> int:
    """The highest seq a database (possibly damaged) says it handed out or reserved; 0
    where it cannot tell. Read only, and only when seq.floor is lost."""
    best = 0
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        for sql in (
            "SELECT max(value) FROM meta WHERE key IN ('last_seq', 'seq_reserved')",
            "SELECT max(seq) FROM readings",
        ):
            try:
                (value,) = conn.execute(sql).fetchone()
            except sqlite3.Error:
                continue
            if isinstance(value, int):
                best = max(best, value)
    finally:
        conn.close()
    return best
