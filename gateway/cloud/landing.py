"""Where the cloud side lands readings: each ``(gateway, seq)`` exactly once.

The gateway delivers at least once, so the same reading may arrive twice (after a
reconnect, a crash, a resend). The landing table's primary key ``(gateway, seq)``
(the contract's idempotency key) and ``ON CONFLICT DO NOTHING`` make a second copy
a no-op, and a batch lands in one transaction: all of it or none of it. The
caller acknowledges a batch only after ``land`` returned, so an acknowledged
reading is committed.

Two backends behind one small interface, chosen by URL:

- ``sqlite:///var/lib/ingest/readings.db`` (the standard library; the path is
  everything after ``sqlite://``, so ``sqlite://readings.db`` is relative);
- ``postgresql://user@host/db`` (psycopg 3, the ``cloud`` extra).

Table ``readings`` (the same columns in both): ``gateway``, ``seq``, ``ts``,
``device``, ``sensor``, ``value`` (the reading's value as JSON text), ``body``
(the whole reading as compact JSON text, extra fields included) and
``received_at`` (epoch seconds when it landed). docs/websocket-uplink.md
describes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gateway.errors import GatewayError

if TYPE_CHECKING:
    import psycopg

MAX_GATEWAY_ID = 128
MAX_NAME = 256  # device and sensor names
MAX_SEQ = 2**63 - 1  # a signed 64-bit column
POSTGRES_CONNECTIONS = 4

_T = TypeVar("_T")

# Compact and stable, so that a body is the same text however often it lands.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class LandingError(GatewayError):
    """The database could not be opened or written; nothing of the batch landed."""


class BadReading(LandingError):
    """A reading is not one the contract describes; carries its index in the batch."""

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        super().__init__(f"readings[{index}]: {message}")


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs ``after + 1`` to ``before - 1`` of ``gateway`` are missing; ``since`` is when
    the reading after the hole landed (epoch seconds)."""

    gateway: str
    after: int
    before: int
    since: float


Row = tuple[str, int, float, str, str, str, str, float]


class Landing(Protocol):
    # Readings that came again with another body than the one stored (the stored one
    # is kept): a gateway that reuses another's id, or a data directory started afresh.
    conflicts: int

    async def land(self, gateway: str, readings: Sequence[Mapping[str, Any]]) -> int:
        """Commit ``readings`` of ``gateway`` in one transaction; the number newly
        inserted (those already there are skipped). Raises ``BadReading`` for a
        reading the contract does not describe (then nothing lands), and
        ``LandingError`` when the database fails."""

    async def land_many(self, batches: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
        """``land`` for several gateways at once (gateway -> its readings): all of them
        in one transaction, which is what a consumer's batch of many gateways'
        messages wants (a transaction each was its cost). Same result and errors."""

    async def gaps(self, older_than: float) -> list[Gap]:
        """Holes in each gateway's seqs whose next reading landed more than
        ``older_than`` seconds ago (younger holes may still be filling)."""

    async def close(self) -> None: ...


def check_gateway(gateway: object) -> str:
    if not isinstance(gateway, str) or not 0 < len(gateway) <= MAX_GATEWAY_ID:
        raise LandingError(f"gateway: a string of 1 to {MAX_GATEWAY_ID} characters")
    return gateway


def rows(gateway: str, readings: Sequence[Mapping[str, Any]], received_at: float) -> list[Row]:
    """The table rows of ``readings``, after checking each against the contract."""
    out: list[Row] = []
    _add_rows(out, gateway, readings, received_at)
    return out


def rows_of_many(
    batches: Mapping[str, Sequence[Mapping[str, Any]]], received_at: float
) -> list[Row]:
    """The table rows of several gateways' readings, in one list."""
    out: list[Row] = []
    for gateway, readings in batches.items():
        _add_rows(out, gateway, readings, received_at)
    return out


def _add_rows(
    out: list[Row], gateway: str, readings: Sequence[Mapping[str, Any]], received_at: float
) -> None:
    check_gateway(gateway)
    for index, reading in enumerate(readings):
        # Exact type checks first: parsed JSON gives dicts, and an ABC check costs more.
        if type(reading) is not dict and not isinstance(reading, Mapping):
            raise BadReading(index, "not a JSON object")
        seq = reading.get("seq")
        if type(seq) is not int or not 0 < seq <= MAX_SEQ:
            raise BadReading(index, f"seq: an integer from 1 to {MAX_SEQ}")
        ts = reading.get("ts")
        # Exact types: a bool is no number of seconds.
        if not (type(ts) is float or type(ts) is int) or not math.isfinite(ts):
            raise BadReading(index, "ts: a finite number of seconds")
        device = _name(index, reading, "device")
        sensor = _name(index, reading, "sensor")
        if "value" not in reading:
            raise BadReading(index, "value: missing")
        try:
            body = _encode(reading)
            value = _value_json(reading["value"])
        except (TypeError, ValueError) as err:
            raise BadReading(index, f"not JSON: {err}") from err
        out.append((gateway, seq, float(ts), device, sensor, value, body, received_at))


def _value_json(value: object) -> str:
    """A value as JSON text; numbers the common case, without the encoder's setup."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        # Finite here: the body was encoded first, and refuses NaN and infinities.
        return float.__repr__(value)
    return _encode(value)


def _name(index: int, reading: Mapping[str, Any], key: str) -> str:
    name = reading.get(key)
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise BadReading(index, f"{key}: a string of 1 to {MAX_NAME} characters")
    return name


_GAPS = """
SELECT gateway, seq, next_seq, next_received FROM (
    SELECT gateway, seq,
        LEAD(seq) OVER w AS next_seq,
        LEAD(received_at) OVER w AS next_received
    FROM readings
    WINDOW w AS (PARTITION BY gateway ORDER BY seq)
) AS t
WHERE next_seq > seq + 1 AND next_received < {cutoff}
ORDER BY gateway, seq
"""


async def open_landing(url: str) -> Landing:
    """The landing for ``url`` (``sqlite://PATH`` or ``postgresql://…``), table created."""
    if url.startswith("sqlite://"):
        return await SqliteLanding.open(Path(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresLanding.open(url)
    raise LandingError(f"database URL {url!r}: expected sqlite://PATH or postgresql://…")


class SqliteLanding:
    """One connection on one thread of its own: SQLite has one writer anyway."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS readings (
        gateway TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        device TEXT NOT NULL,
        sensor TEXT NOT NULL,
        value TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (gateway, seq)
    ) WITHOUT ROWID
    """
    _INSERT = (
        "INSERT INTO readings (gateway, seq, ts, device, sensor, value, body, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway, seq) DO NOTHING"
    )

    _BODY = "SELECT body FROM readings WHERE gateway = ? AND seq = ?"

    def __init__(self, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self._executor = executor
        self._db = db
        self.conflicts = 0

    @classmethod
    async def open(cls, path: Path) -> SqliteLanding:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landing-sqlite")

        def connect() -> sqlite3.Connection:
            # Autocommit off at the driver: each land is one explicit transaction.
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                # An acknowledged batch must survive a power cut of the server.
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA busy_timeout=5000")
                db.execute(cls._SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
            return db

        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except sqlite3.Error as err:
            executor.shutdown(wait=False)
            raise LandingError(f"cannot open {path}: {err}") from err
        return cls(executor, db)

    async def _call(self, work: Callable[[], _T]) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except sqlite3.Error as err:
            raise LandingError(f"sqlite: {err}") from err

    async def land(self, gateway: str, readings: Sequence[Mapping[str, Any]]) -> int:
        return await self._write(rows(gateway, readings, time.time()))

    async def land_many(self, batches: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
        return await self._write(rows_of_many(batches, time.time()))

    async def _write(self, batch: list[Row]) -> int:
        if not batch:
            return 0
        db = self._db

        def write() -> int:
            before = db.total_changes
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(self._INSERT, batch)
                inserted = db.total_changes - before
                if inserted < len(batch):
                    # Duplicates are rare (a resend): only then are bodies compared.
                    for row in batch:
                        (stored,) = db.execute(self._BODY, (row[0], row[1])).fetchone()
                        self.conflicts += stored != row[6]
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return inserted

        return await self._call(write)

    async def gaps(self, older_than: float) -> list[Gap]:
        cutoff = time.time() - older_than
        found = await self._call(
            lambda: self._db.execute(_GAPS.format(cutoff="?"), (cutoff,)).fetchall()
        )
        return [Gap(*row) for row in found]

    async def close(self) -> None:
        with contextlib.suppress(LandingError):
            await self._call(self._db.close)
        self._executor.shutdown(wait=True)


class PostgresLanding:
    """A few connections, each landing one batch at a time in its own transaction.

    A batch is copied (COPY, one stream) into a temporary table and moved from there
    with ``INSERT … SELECT … ON CONFLICT DO NOTHING``: 2.6 times the rate of one
    ``INSERT … SELECT FROM unnest(arrays)`` with batches of 1,000 (docs/benchmarks.md).
    """

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS readings (
        gateway text NOT NULL,
        seq bigint NOT NULL,
        ts double precision NOT NULL,
        device text NOT NULL,
        sensor text NOT NULL,
        value text NOT NULL,
        body text NOT NULL,
        received_at double precision NOT NULL,
        PRIMARY KEY (gateway, seq)
    )
    """
    # One per connection; emptied by each commit.
    _INCOMING = "CREATE TEMP TABLE incoming (LIKE readings) ON COMMIT DELETE ROWS"
    _COPY = "COPY incoming FROM STDIN"
    _MOVE = "INSERT INTO readings SELECT * FROM incoming ON CONFLICT (gateway, seq) DO NOTHING"
    _CONFLICTS = (
        "SELECT count(*) FROM incoming i JOIN readings r USING (gateway, seq)"
        " WHERE r.body <> i.body"
    )

    def __init__(self, url: str, size: int) -> None:
        self._url = url
        # None: a slot whose connection is not open (yet, or since it failed).
        self._slots: asyncio.Queue[psycopg.AsyncConnection[Any] | None] = asyncio.Queue()
        for _ in range(size):
            self._slots.put_nowait(None)
        self._open: set[psycopg.AsyncConnection[Any]] = set()
        self.conflicts = 0

    @classmethod
    async def open(cls, url: str, size: int = POSTGRES_CONNECTIONS) -> PostgresLanding:
        landing = cls(url, size)
        try:
            # The first connection creates the table, and shows the server is there.
            await landing._run(lambda conn: conn.execute("SELECT 1"))
        except LandingError:
            await landing.close()
            raise
        return landing

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            import psycopg  # noqa: PLC0415 - optional: only a PostgreSQL landing needs it
        except ImportError as err:
            raise LandingError(
                "PostgreSQL needs psycopg: pip install 'edge-gateway[cloud]'"
            ) from err
        try:
            conn = await psycopg.AsyncConnection.connect(self._url)
        except psycopg.Error as err:
            raise LandingError(f"cannot connect to PostgreSQL: {err}") from err
        self._open.add(conn)
        async with conn.transaction():
            await conn.execute(self._SCHEMA)
            await conn.execute(self._INCOMING)
        return conn

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Any]) -> Any:
        """Run ``work`` in one transaction on a free connection; its result."""
        import psycopg  # noqa: PLC0415 - imported by _connect first

        conn = await self._slots.get()
        try:
            if conn is None or conn.closed:
                conn = await self._connect()
            async with conn.transaction():
                return await work(conn)
        except psycopg.Error as err:
            # The connection may be broken: the next batch opens a fresh one.
            if conn is not None:
                self._open.discard(conn)
                await conn.close()
                conn = None
            raise LandingError(f"postgresql: {err}") from err
        finally:
            self._slots.put_nowait(conn)

    async def land(self, gateway: str, readings: Sequence[Mapping[str, Any]]) -> int:
        return await self._write(rows(gateway, readings, time.time()))

    async def land_many(self, batches: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
        return await self._write(rows_of_many(batches, time.time()))

    async def _write(self, batch: list[Row]) -> int:
        if not batch:
            return 0

        async def insert(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.cursor().copy(self._COPY) as copy:
                for row in batch:
                    await copy.write_row(row)
            inserted = (await conn.execute(self._MOVE)).rowcount
            if inserted < len(batch):
                # Duplicates are rare (a resend): only then are bodies compared.
                counted = await (await conn.execute(self._CONFLICTS)).fetchone()
                self.conflicts += counted[0] if counted is not None else 0
            return inserted

        inserted: int = await self._run(insert)
        return inserted

    async def gaps(self, older_than: float) -> list[Gap]:
        cutoff = time.time() - older_than

        async def query(conn: psycopg.AsyncConnection[Any]) -> list[Gap]:
            cursor = await conn.execute(_GAPS.format(cutoff="%s"), (cutoff,))
            return [Gap(*row) for row in await cursor.fetchall()]

        found: list[Gap] = await self._run(query)
        return found

    async def close(self) -> None:
        for conn in list(self._open):
            await conn.close()
        self._open.clear()
