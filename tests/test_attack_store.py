"""The store against damaged small files and awkward data directories, as a worn SD
card or a careless restore leaves them: a clear error or a safe continuation, never a
crash at start, a dead writer or a reused seq."""

from __future__ import annotations

import logging
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


@pytest.mark.parametrize("how", ["emptied", "deleted"])
async def test_a_log_emptied_or_deleted_under_the_floor_is_said_and_no_seq_reused(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert await put(tmp_path, 5) == 5
    db = tmp_path / "readings.db"
    if how == "emptied":
        db.write_bytes(b"")  # what a file system check can leave of a file
    else:
        db.unlink()
    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        assert await next_seq(tmp_path) == 6
    assert "readings.db is a new, empty log although seqs up to 5" in caplog.text


async def test_a_fresh_data_directory_says_nothing_of_a_lost_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        assert await next_seq(tmp_path) == 1
        assert await next_seq(tmp_path) == 2
    assert "empty log" not in caplog.text
