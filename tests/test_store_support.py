"""Helpers shared by the store's test files (no tests here)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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
