"""Simulated devices on real pseudo-terminals, read through their link like a serial port."""

from __future__ import annotations

import os
import random
import re
import termios
from pathlib import Path

import pytest

from drivers.serial_line.codec import REASON_NUL, LineDecoder
from drivers.serial_line.device import CounterSource, garbage_line
from simulators import PtyDevice
from tests.support.common import wait_until
from tests.support.sim import PortReader, counter_bytes


async def test_counter_writes_exact_lines_in_raw_mode(tmp_path: Path) -> None:
    link = tmp_path / "dev" / "counter"
    async with PtyDevice("counter", link, rate=10_000, count=1000, paused=True) as dev:
        assert link.is_symlink()
        assert os.readlink(link) == dev.slave_path
        reader = PortReader(link)
        attrs = termios.tcgetattr(reader.fd)
        assert attrs[3] & (termios.ECHO | termios.ICANON) == 0  # no echo, no line editing
        assert attrs[1] & termios.OPOST == 0  # no output translation (\n stays \n)
        dev.resume()
        await wait_until(lambda: reader.lines() == 1000, message="1000 lines")
        assert reader.data == counter_bytes(1, 1000)
        assert dev.finished
        assert dev.lines_written == dev.lines_generated == 1000
        # Done writing, still plugged in: a reader can drain it.
        assert dev.plugged
        assert link.exists()
        reader.close()
    assert not link.exists()


async def test_counter_start(tmp_path: Path) -> None:
    link = tmp_path / "c"
    async with PtyDevice("counter", link, rate=1000, count=3, start=41, paused=True) as dev:
        reader = PortReader(link)
        dev.resume()
        await wait_until(lambda: reader.lines() == 3, message="3 lines")
        assert reader.data == counter_bytes(41, 43)
        reader.close()


async def test_thermo_lines_decode_to_drifting_values(tmp_path: Path) -> None:
    link = tmp_path / "thermo"
    async with PtyDevice("thermo", link, rate=1000, count=200, paused=True, seed=1) as dev:
        reader = PortReader(link)
        dev.resume()
        await wait_until(lambda: reader.lines() == 200, message="200 lines")
    out = LineDecoder("thermo-1").feed(bytes(reader.data), 0.0)
    assert out.dead_letters == []
    temps = [s.value for s in out.samples if s.sensor == "t"]
    hums = [s.value for s in out.samples if s.sensor == "h"]
    assert len(temps) == len(hums) == 200
    assert all(isinstance(t, float) and 15 < t < 30 for t in temps)
    assert all(isinstance(h, float) and 30 < h < 50 for h in hums)
    assert len(set(temps)) > 10  # it drifts
    reader.close()


async def test_garbage_lines_stand_alone(tmp_path: Path) -> None:
    link = tmp_path / "noisy"
    async with PtyDevice(
        "counter", link, rate=5000, count=200, garbage_every=50, paused=True, seed=2
    ) as dev:
        reader = PortReader(link)
        dev.resume()
        await wait_until(lambda: reader.lines() == 204, message="200 lines and 4 garbage")
        assert dev.garbage_written == 4
    out = LineDecoder("c").feed(bytes(reader.data), 0.0)
    assert [s.value for s in out.samples] == list(range(1, 201))
    assert [d.reason for d in out.dead_letters] == [REASON_NUL] * 4
    reader.close()


def test_garbage_line_never_parses_nor_splits() -> None:
    rng = random.Random(0)
    for _ in range(1000):
        line = garbage_line(rng)
        assert line.endswith(b"\n")
        assert b"\n" not in line[:-1]
        assert b"\r" not in line
        out = LineDecoder("c").feed(line, 0.0)
        assert out.samples == []
        assert len(out.dead_letters) == 1


async def test_nobody_reading_never_blocks_and_unplug_still_works(tmp_path: Path) -> None:
    link = tmp_path / "c"
    async with PtyDevice("counter", link, rate=100_000) as dev:
        # The pty buffer fills up; the loop keeps running (this wait itself proves it).
        await wait_until(lambda: dev.lines_written > 500, message="buffer filling")
        await dev.unplug()
        assert not dev.plugged
        assert not link.exists()
        await wait_until(lambda: dev.lines_lost > 0, message="lines lost while unplugged")
        dev.replug()
        assert link.exists()
        reader = PortReader(link)
        await wait_until(lambda: reader.lines() >= 100, message="lines on the new pty")
        # Whole lines only on the new pty: the old, half-written write died with the old pty.
        assert re.fullmatch(rb"(n=\d+\n)+", bytes(reader.data[: reader.data.rfind(b"\n") + 1]))
        reader.close()
    assert dev.unplugs == 1


async def test_unplug_with_a_reader_cuts_no_line(tmp_path: Path) -> None:
    link = tmp_path / "c"
    async with PtyDevice("counter", link, rate=20_000) as dev:
        reader = PortReader(link)
        await wait_until(lambda: reader.lines() >= 500, message="lines")
        first = int(reader.data[2 : reader.data.index(b"\n")])
        await dev.unplug()
        await wait_until(lambda: reader.poll() is not None and reader.hung_up, message="hangup")
        assert reader.data.endswith(b"\n")
        last = first + reader.data.count(b"\n") - 1
        assert reader.data == counter_bytes(first, last)
        reader.close()


async def test_unplug_schedule(tmp_path: Path) -> None:
    link = tmp_path / "c"
    async with PtyDevice("counter", link, rate=100, unplug_every=0.05, unplug_for=0.05) as dev:
        await wait_until(lambda: dev.unplugs >= 3 and dev.plugged, message="3 unplugs")
        assert os.readlink(link) == dev.slave_path


async def test_inject_writes_between_lines(tmp_path: Path) -> None:
    link = tmp_path / "c"
    async with PtyDevice("counter", link, rate=1000, count=5, paused=True) as dev:
        reader = PortReader(link)
        dev.inject(b"\xff raw\n")
        await wait_until(lambda: reader.lines() == 1, message="injected bytes")
        dev.resume()
        await wait_until(lambda: reader.lines() == 6, message="then the lines")
        assert reader.data == b"\xff raw\n" + counter_bytes(1, 5)
        assert dev.lines_written == 5
        reader.close()


async def test_a_stale_link_is_replaced(tmp_path: Path) -> None:
    link = tmp_path / "c"
    link.symlink_to("/dev/this-adapter-is-gone")
    async with PtyDevice("counter", link) as dev:
        assert os.readlink(link) == dev.slave_path
    assert not link.exists()
    assert not link.is_symlink()


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown device kind"):
        PtyDevice("toaster", tmp_path / "x")
    with pytest.raises(ValueError, match="rate"):
        PtyDevice("counter", tmp_path / "x", rate=0)
    with pytest.raises(ValueError, match="count"):
        PtyDevice("counter", tmp_path / "x", count=-1)


def test_counter_source_numbers_lines() -> None:
    source = CounterSource(7)
    assert [source.line() for _ in range(3)] == [b"n=7\n", b"n=8\n", b"n=9\n"]


async def test_an_unusable_link_path_leaks_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileExistsError):  # mkdir of the link's directory
        async with PtyDevice("counter", blocker / "c"):
            pass
    assert len(os.listdir("/proc/self/fd")) == fds_before
