"""Opening a device without blocking the event loop, and without leaking it on cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def open_off_loop(open_device: Callable[[], T], close_device: Callable[[T], None]) -> T:
    """``open_device()`` in an executor (opening a port or a pin may block).

    If the caller is cancelled meanwhile, the open may still succeed in its thread:
    what it opens is then closed with ``close_device``.
    """
    opening = asyncio.get_running_loop().run_in_executor(None, open_device)
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:

        def close_if_opened(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                close_device(done.result())

        opening.add_done_callback(close_if_opened)
        raise
