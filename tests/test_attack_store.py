"""The store against damaged small files and awkward data directories, as a worn SD
card or a careless restore leaves them: a clear error or a safe continuation, never a
crash at start, a dead writer or a reused seq."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_store_seqs import next_seq, put


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe\x00\x9c garbage",  # bytes an SD card returns for a damaged block
        b"99999999999999999999999\n",  # beyond SQLite's integers
        b"9223372036854700000\n",  # in range, but the next block overflows it
        b"1_000\n",  # int() reads this; nothing the store writes looks like it
    ],
)
async def test_a_damaged_floor_is_read_as_lost(tmp_path: Path, content: bytes) -> None:
    assert await put(tmp_path, 5) == 5
    (tmp_path / "seq.floor").write_bytes(content)
    # Read as lost, the database's copy of the floor still says where seqs stopped.
    assert await next_seq(tmp_path) == 6
    assert await next_seq(tmp_path) == 7
