"""``edge-gateway sim`` as a process: announces its device, writes lines, stops on a signal."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.support.common import wait_until
from tests.support.sim import PortReader, counter_bytes, start_sim, stop


async def test_sim_runs_until_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "dev" / "counter-1"
    proc = await start_sim("counter", "--link", str(link), "--rate", "2000", "--count", "50")
    assert proc.stderr is not None
    async with asyncio.timeout(10):
        announce = (await proc.stderr.readline()).decode()
    assert f"linked at {link}" in announce
    assert "/dev/pts/" in announce
    reader = PortReader(link)
    # Written before we opened: some lines may already be in the buffer; all 50 arrive.
    await wait_until(lambda: reader.lines() == 50, message="50 lines")
    assert reader.data == counter_bytes(1, 50)
    reader.close()
    code, err = await stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert err == b""
    assert not link.exists()


async def test_sim_stops_on_sigint_with_unplugs_and_garbage(tmp_path: Path) -> None:
    link = tmp_path / "thermo"
    proc = await start_sim(
        "thermo",
        "--link",
        str(link),
        "--rate",
        "50",
        "--garbage-every",
        "5",
        "--unplug-every",
        "0.2",
        "--unplug-for",
        "0.1",
        "--seed",
        "4",
    )
    assert proc.stderr is not None
    async with asyncio.timeout(10):
        await proc.stderr.readline()
    assert link.is_symlink()
    code, err = await stop(proc, signal.SIGINT)
    assert code == 0, err
    assert not link.is_symlink()


async def test_bad_usage_exits_2(tmp_path: Path) -> None:
    for args in (
        ("toaster", "--link", str(tmp_path / "x")),
        ("counter",),
        ("counter", "--link", str(tmp_path / "x"), "--rate", "0"),
        ("counter", "--link", str(tmp_path / "x"), "--count", "-3"),
    ):
        proc = await start_sim(*args)
        async with asyncio.timeout(10):
            _, err = await proc.communicate()
        assert proc.returncode == 2, args
        assert b"usage:" in err


async def test_unusable_link_path_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = await start_sim("counter", "--link", str(blocker / "c"))
    async with asyncio.timeout(10):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert err.decode().startswith("edge-gateway sim: cannot create the device:")
    assert err.count(b"\n") == 1
