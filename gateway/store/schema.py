"""The database file: its tables, how a connection to it is opened, and corruption.

One file, ``readings.db``, in WAL mode so that readers (uplinks, the local server,
the ``queue`` commands) never block the writer. ``seq`` is the readings table's
INTEGER PRIMARY KEY, so rows are stored in seq order and every range read is a
b-tree walk.
"""

from __future__ import annotations

import errno
import sqlite3
import time
from pathlib import Path

from gateway.settings import Durability

# The log's file in the data directory (with its -wal and -shm companions).
DB_NAME = "readings.db"
SCHEMA_VERSION = 1

# How long a connection waits for another one's write lock (the ``queue`` commands
# take it for a short transaction while the gateway runs).
BUSY_TIMEOUT_MS = 5000

# The WAL file is reused from its start after each checkpoint; this caps what it
# keeps on disk after a burst.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024

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

# Keys of the meta table. last_seq is written in the same transaction as the rows
# that use it, so a seq is never handed out twice even when every row is deleted.
META_LAST_SEQ = "last_seq"
META_DROPPED = "dropped"
META_DEAD_LETTERS = "dead_letters"
META_SCHEMA = "schema_version"
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
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    synchronous = "FULL" if durability == "full" else "NORMAL"
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    return conn


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


def move_aside(path: Path) -> Path:
    """Rename a corrupt database and its WAL/SHM files; they are kept for inspection."""
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
    return target
