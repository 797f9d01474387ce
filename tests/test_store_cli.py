"""``edge-gateway queue``: stats, dead letters, replay and purge on a real data directory."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path

import pytest
import tomli_w

from gateway.errors import StoreError
from gateway.reading import DeadLetter
from gateway.store import schema
from tests.support.cli import queue
from tests.support.store import next_seq, opened, sample


async def _prepare(data_dir: Path) -> None:
    """100 readings, consumer mqtt acked to 60 and logger to 90, two dead letters."""
    async with opened(data_dir) as store:
        await store.register_consumer("mqtt")
        await store.register_consumer("logger")
        store.put_samples([sample(i) for i in range(100)])
        store.put_dead_letter(DeadLetter("thermo-1", "bad line", b"t=\xff\n\x00", 1.0))
        store.put_dead_letter(DeadLetter("gps", "bad checksum", b"$GPGGA,1*00", 2.0))
        await store.flush()
        await store.ack("mqtt", 60)
        await store.ack("logger", 90)


async def test_stats_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await _prepare(tmp_path)
    assert queue("stats", "--data-dir", str(tmp_path), "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["last_seq"] == 100
    assert stats["stored"] == 100
    assert stats["dropped"] == 0
    assert stats["dead_letters_total"] == stats["dead_letters_stored"] == 2
    assert stats["running"] is False
    assert stats["bytes"] > 0
    depths = {c["name"]: (c["acked_seq"], c["depth"]) for c in stats["consumers"]}
    assert depths == {"mqtt": (60, 40), "logger": (90, 10)}


async def test_stats_for_people_while_the_gateway_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _prepare(tmp_path)
    async with opened(tmp_path) as store:
        store.put_samples([sample(1)])
        await store.flush()
        assert queue("stats", "--data-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "(gateway running)" in out
    assert "last seq       101" in out
    assert "mqtt" in out
    assert "41" in out  # mqtt's depth


async def test_stats_reads_the_data_dir_from_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    await _prepare(data_dir)
    config = tmp_path / "gateway.toml"
    config.write_text(tomli_w.dumps({"gateway": {"id": "gw-test", "data_dir": str(data_dir)}}))
    assert queue("stats", "-c", str(config), "--json") == 0
    assert json.loads(capsys.readouterr().out)["last_seq"] == 100


async def test_dead_letters_show_raw_bytes_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _prepare(tmp_path)
    assert queue("dead-letters", "--data-dir", str(tmp_path)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "thermo-1  bad line  t=\\xff\\n\\x00" in lines[0]
    assert "gps  bad checksum  $GPGGA,1*00" in lines[1]
    assert queue("dead-letters", "--data-dir", str(tmp_path), "--limit", "1", "--json") == 0
    [line] = capsys.readouterr().out.splitlines()
    obj = json.loads(line)
    assert obj["device"] == "gps"
    assert bytes.fromhex(obj["raw_hex"]) == b"$GPGGA,1*00"


async def test_replay_moves_a_cursor_back_and_says_how_many(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _prepare(tmp_path)
    assert queue("replay", "--data-dir", str(tmp_path), "--uplink", "mqtt", "--from-seq", "21") == 0
    out = capsys.readouterr().out
    assert "from 60 to 20" in out
    assert "40 stored readings (seq 21..60)" in out
    async with opened(tmp_path) as store:
        assert await store.register_consumer("mqtt") == 20
        assert store.stats().depth == 80


async def test_replay_refusals(tmp_path: Path) -> None:
    await _prepare(tmp_path)
    with pytest.raises(StoreError, match="known: logger, mqtt"):
        queue("replay", "--data-dir", str(tmp_path), "--uplink", "nope", "--from-seq", "1")
    with pytest.raises(StoreError, match="moves a cursor back"):
        queue("replay", "--data-dir", str(tmp_path), "--uplink", "mqtt", "--from-seq", "80")
    async with opened(tmp_path):
        with pytest.raises(StoreError, match="gateway is running"):
            queue("replay", "--data-dir", str(tmp_path), "--uplink", "mqtt", "--from-seq", "1")


async def test_replay_says_what_is_no_longer_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _prepare(tmp_path)
    assert queue("purge", "--data-dir", str(tmp_path), "--readings-before", "31", "--yes") == 0
    assert queue("replay", "--data-dir", str(tmp_path), "--uplink", "mqtt", "--from-seq", "1") == 0
    out = capsys.readouterr().out
    assert "30 stored readings (seq 31..60)" in out
    assert "readings 1..30 are no longer stored" in out


async def test_purge_asks_first_and_works_while_the_gateway_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await _prepare(tmp_path)
    async with opened(tmp_path) as store:
        await store.register_consumer("mqtt")
        await store.register_consumer("logger")
        monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
        assert queue("purge", "--data-dir", str(tmp_path), "--readings-before", "71") == 1
        assert (
            "70 readings with seq < 71, 10 of them not yet acknowledged" in capsys.readouterr().out
        )
        assert len(await store.read_after(0, 1000)) == 100

        monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
        assert queue("purge", "--data-dir", str(tmp_path), "--readings-before", "71") == 0
        assert "deleted 70 readings" in capsys.readouterr().out
        assert [r.seq for r in await store.read_after(0, 1000)] == list(range(71, 101))
        assert queue("purge", "--data-dir", str(tmp_path), "--dead-letters", "--yes") == 0
        assert "deleted 2 dead letters" in capsys.readouterr().out
        # The running store notices and keeps counting right.
        store.put_samples([sample(1)])
        assert await store.flush() == 101
        assert store.stats().depth == 31
        assert store.stats().dead_letters == 2  # a total, not what is stored


def test_missing_store_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        queue("stats", "--data-dir", str(tmp_path))


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        queue("replay", "--data-dir", str(tmp_path), "--uplink", "mqtt", "--from-seq", "0")
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        queue("purge", "--data-dir", str(tmp_path), "--dead-letters", "--readings-before", "3")


async def test_purging_every_reading_keeps_the_last_seq(tmp_path: Path) -> None:
    await _prepare(tmp_path)
    assert queue("purge", "--data-dir", str(tmp_path), "--readings-before", "1000", "--yes") == 0
    # Appending commits left the meta table's last_seq to the rows; the purge wrote it.
    with contextlib.closing(sqlite3.connect(tmp_path / schema.DB_NAME)) as conn:
        assert schema.read_meta(conn)[schema.META_LAST_SEQ] == 100
    (tmp_path / "seq.floor").unlink()
    assert await next_seq(tmp_path) == 101
