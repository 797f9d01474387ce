"""Real stores on files in the test's directory: opened with given options, readings to
put in them, the ``store`` fixture for tests of what consumes one, and a write lock held
from outside."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.reading import Sample
from gateway.settings import StoreSettings
from gateway.store import Store, schema


def pages(at_4kib: int) -> int:
    """A ``max_page_count`` as big in bytes as ``at_4kib`` pages of 4 KiB, whatever the
    store's page size: the caps below were sized in those."""
    return at_4kib * 4096 // schema.PAGE_SIZE


def sample(i: int, device: str = "thermo-1", ts: float | None = None) -> Sample:
    return Sample(device, "t", 20.0 + i / 10, time.time() if ts is None else ts)


@asynccontextmanager
async def opened(data_dir: Path, **options: Any) -> AsyncIterator[Store]:
    """A store on a real file; keyword options go to StoreSettings or Store.open."""
    open_keys = {"max_page_count", "startup_grace"}
    settings = StoreSettings(**{k: v for k, v in options.items() if k not in open_keys})
    store = await Store.open(
        data_dir / "readings.db", settings, **{k: v for k, v in options.items() if k in open_keys}
    )
    try:
        yield store
    finally:
        await store.close()


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Hold the database's write lock from outside, so the writer waits inside a commit."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    # durability "normal": these tests are about consumers, not power loss.
    async with opened(tmp_path, durability="normal") as store:
        yield store


@contextlib.contextmanager
def tiny_filesystem(where: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted at ``where``: a real filesystem that fills up."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill_filesystem(path: Path) -> Path:
    """Write a file into ``path`` until the filesystem answers that it is full."""
    filler = path / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


# The files of a data directory that hold readings, and those that hold the seq rule.
DB_FILES = ("readings.db", "readings.db-wal")
SEQ_FILES = ("seq.floor", "seq.run")


def copy(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    dst.mkdir(exist_ok=True)
    for name in names:
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)


async def next_seq(data_dir: Path, durability: str = "full") -> int:
    async with opened(data_dir, durability=durability) as store:
        store.put_samples([sample(0)])
        return await store.flush()


async def put(store_dir: Path, count: int, durability: str = "full") -> int:
    async with opened(store_dir, durability=durability) as store:
        store.put_samples([sample(i) for i in range(count)])
        return await store.flush()
