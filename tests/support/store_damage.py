"""Damage to a store's database file, as an SD card produces it: a page overwritten in place."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from gateway.store import schema
from tests.support.store import opened, sample

# The page size of a database the store creates.
PAGE = schema.PAGE_SIZE


def readings_leaves(db: Path) -> list[int]:
    """The leaf pages of the readings table, in seq order, as the file holds it now."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'readings' AND pagetype = 'leaf' ORDER BY path"
        ).fetchall()
    return [int(p) for (p,) in rows]


def damage_page(db: Path, pageno: int) -> None:
    """Overwrite one page of the file with bytes no b-tree page can start with."""
    with db.open("r+b") as f:
        f.seek((pageno - 1) * PAGE)
        f.write(b"\xa5" * PAGE)


# Readings in a log that damage_the_middle can damage: enough for many leaves.
COUNT = 5000


async def fill(data_dir: Path, count: int = COUNT, **options: object) -> None:
    """A log of ``count`` readings, cleanly closed: every page is in readings.db."""
    async with opened(data_dir, **options) as store:
        store.put_samples([sample(i) for i in range(count)])
        assert await store.flush() == count


def damage_the_middle(data_dir: Path) -> int:
    """Damage a leaf in the middle of the readings table; returns its page number."""
    db = data_dir / "readings.db"
    leaves = readings_leaves(db)
    assert len(leaves) > 10
    pageno = leaves[len(leaves) // 2]
    damage_page(db, pageno)
    return pageno
