"""Damage to a store's database file, as an SD card produces it: a page overwritten in place."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

PAGE = 4096


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
