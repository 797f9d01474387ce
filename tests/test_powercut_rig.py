"""The power-cut rig itself: what survives a cut is what was synced, nothing more."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import powercut
from tests.support.powercut import PowerCutRig, sync_dir, write_file

PAGE = 4096


def test_an_unsynced_write_vanishes_and_a_synced_one_stays(powercut_rig: PowerCutRig) -> None:
    rig = powercut_rig
    path = rig.mountpoint / "data"
    write_file(path, b"durable!", sync=True)
    sync_dir(rig.mountpoint)
    write_file(path, b"LOST", sync=False)
    write_file(path, b" and more", sync=False, offset=8)
    assert path.read_bytes() == b"LOSTble! and more"

    summary = rig.cut()
    rig.mount()

    assert path.read_bytes() == b"durable!"
    assert summary["dropped_pages"] == 1
    # fdatasync counts as a sync too; a truncation not synced is undone.
    fd = os.open(path, os.O_RDWR)
    os.pwrite(fd, b"D", 0)
    os.fdatasync(fd)
    os.ftruncate(fd, 2)
    os.close(fd)
    rig.cut()
    rig.mount()
    assert path.read_bytes() == b"Durable!"


def test_a_new_file_needs_its_directory_synced(powercut_rig: PowerCutRig) -> None:
    rig = powercut_rig
    named = rig.mountpoint / "named"
    unnamed = rig.mountpoint / "unnamed"
    write_file(named, b"kept", sync=True)
    sync_dir(rig.mountpoint)
    # Its data is fsynced, but not the directory that holds its name.
    write_file(unnamed, b"fsynced data", sync=True)
    assert sorted(os.listdir(rig.mountpoint)) == ["named", "unnamed"]

    summary = rig.cut()
    rig.mount()

    assert sorted(os.listdir(rig.mountpoint)) == ["named"]
    assert named.read_bytes() == b"kept"
    assert summary["dropped_names"] == ["create unnamed"]


def test_a_rename_without_a_directory_fsync_reverts(powercut_rig: PowerCutRig) -> None:
    rig = powercut_rig
    floor = rig.mountpoint / "seq.floor"
    tmp = rig.mountpoint / "seq.floor.tmp"
    write_file(floor, b"100\n", sync=True)
    sync_dir(rig.mountpoint)

    # tmp + fsync + rename, but no fsync of the directory: the old floor comes back.
    write_file(tmp, b"200\n", sync=True)
    os.replace(tmp, floor)
    assert floor.read_bytes() == b"200\n"
    rig.cut()
    rig.mount()
    assert floor.read_bytes() == b"100\n"
    assert not tmp.exists()

    # With the directory fsynced the new floor stays, and so does an unlink.
    write_file(tmp, b"300\n", sync=True)
    os.replace(tmp, floor)
    sync_dir(rig.mountpoint)
    (rig.mountpoint / "gone").write_bytes(b"")
    sync_dir(rig.mountpoint)
    (rig.mountpoint / "gone").unlink()
    sync_dir(rig.mountpoint)
    rig.cut()
    rig.mount()
    assert floor.read_bytes() == b"300\n"
    assert sorted(os.listdir(rig.mountpoint)) == ["seq.floor"]


def test_a_torn_cut_keeps_a_prefix_of_the_unsynced_pages_torn_at_a_sector(
    powercut_rig: PowerCutRig,
) -> None:
    rig = powercut_rig
    path = rig.mountpoint / "torn"
    write_file(path, b"A" * 4 * PAGE, sync=True)
    sync_dir(rig.mountpoint)
    write_file(path, b"B" * 4 * PAGE, sync=False)

    # A seed that tears the third page: two pages whole, part of the third.
    summary = rig.cut(tear=True, seed=7)
    rig.mount()

    [torn] = summary["torn"]
    assert summary["kept_pages"] == torn["page"] + 1
    kept = torn["page"] * PAGE + torn["bytes"]
    assert 0 < kept < 4 * PAGE
    assert kept % 512 == 0
    assert kept % PAGE != 0, "the seed should tear a page in the middle"
    assert path.read_bytes() == b"B" * kept + b"A" * (4 * PAGE - kept)


def test_a_clean_unmount_keeps_everything(powercut_rig: PowerCutRig) -> None:
    rig = powercut_rig
    write_file(rig.mountpoint / "unsynced", b"written", sync=False)
    rig.unmount()
    rig.mount()
    assert (rig.mountpoint / "unsynced").read_bytes() == b"written"


def count_rows_in_another_process(db: Path) -> int:
    """A reader in its own process, sharing the WAL index (the mmapped -shm) with us."""
    code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
    code += "print(c.execute('SELECT count(*) FROM t').fetchone()[0])"
    out = subprocess.run(
        [sys.executable, "-c", code, str(db)], capture_output=True, check=True, timeout=30
    )
    return int(out.stdout)


# Commits rows 200..299 without syncing them, says so, and waits to be killed.
UNSYNCED_WRITER = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA synchronous = OFF")
for n in range(200, 300):
    conn.execute("INSERT INTO t VALUES (?, ?)", (n, os.urandom(300)))
print(conn.execute("SELECT count(*) FROM t").fetchone()[0], flush=True)
signal.pause()
"""


def test_sqlite_in_wal_mode_works_and_keeps_its_fsynced_commits(
    powercut_rig: PowerCutRig,
) -> None:
    rig = powercut_rig
    db = rig.mountpoint / "readings.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, pad BLOB)")
    for n in range(200):
        conn.execute("INSERT INTO t VALUES (?, ?)", (n, os.urandom(300)))
    assert count_rows_in_another_process(db) == 200

    # A second process commits more without syncing, while this one keeps the log open.
    writer = subprocess.Popen(
        [sys.executable, "-c", UNSYNCED_WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "300"
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (300,)
    conn.close()  # not the last connection: the writer's stays, so no checkpoint
    rig.cut([writer], tear=True, seed=11)
    rig.mount()

    conn = sqlite3.connect(db, isolation_level=None)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]
    conn.close()
    assert rows[:200] == list(range(200))
    # What survives of the unsynced commits is a prefix of them.
    assert rows == list(range(len(rows)))


def test_without_fuse_the_rig_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda *_: False)
    reason = powercut.fuse_unavailable.__wrapped__()
    assert reason == "FUSE cannot be mounted here: /dev/fuse is missing or not accessible"
