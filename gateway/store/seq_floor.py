"""A seq floor kept outside the database, so a replaced database never reuses a seq.

Cloud consumers dedupe on (gateway id, seq): if a corrupt database were replaced
by a fresh one counting from 1 again, new readings would be discarded as
duplicates of old ones. Before the store hands out a seq above the floor, it
raises the floor by a whole block (a hi-lo allocator), so the file is written
once per ``BLOCK`` seqs, not once per commit.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = 100_000


class SeqFloor:
    """``<data_dir>/seq.floor``: no seq above ``value`` has ever been handed out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.value = self._read()

    def _read(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            return 0
        try:
            return int(text.strip())
        except ValueError:
            # A torn or damaged floor is no worse than none: the database's own
            # last_seq still holds, and the next write replaces the file.
            return 0

    def reserve(self, seq: int) -> None:
        """Make sure seqs up to ``seq`` are below the floor (fsynced) before use."""
        if seq > self.value:
            self._write(seq + BLOCK)

    def settle(self, last_seq: int) -> None:
        """Lower the floor to ``last_seq``, the last seq handed out, once every commit is
        on disk (a clean close): the next start continues right after it, not a block on."""
        if last_seq < self.value:
            self._write(last_seq)

    def _write(self, value: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{value}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.value = value
