"""Captures: `edge-gateway record` from a serial port, `edge-gateway sim replay` onto a pty.

A simulated GPS is recorded by the real command on its pseudo-terminal; the capture is
played back into the NMEA driver feeding a real store, and the readings stored are the
ones the receiver's bytes make.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from itertools import islice
from pathlib import Path

import pytest

from drivers.nmea.codec import NmeaDecoder
from drivers.nmea.settings import NmeaSettings
from drivers.nmea.transport import NmeaDriver
from gateway.cli import main
from gateway.settings import StoreSettings
from gateway.store import Store
from simulators import PtyDevice
from simulators.capture import (
    FORMAT,
    MAX_CHUNK,
    Capture,
    CaptureError,
    CaptureWriter,
    PortSetup,
    read_capture,
)
from simulators.replay import ReplayDevice, schedule
from tests.support.common import wait_until
from tests.support.drivers import running, wait_open
from tests.support.sim import ROOT, PortReader, counter_bytes, start_sim, stop

FIXES = 12
# The simulated receiver writes a fix as GGA, RMC, VTG, GSA and three GSV lines.
LINES_PER_FIX = 7


def gateway_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


async def record(link: Path, out: Path, device: PtyDevice, done: int) -> None:
    """Run `edge-gateway record` on ``link`` until ``done`` lines of ``device`` are in ``out``."""
    proc = await asyncio.create_subprocess_exec(
        *gateway_cmd("record", "--port", str(link), "--out", str(out), "--baudrate", "115200"),
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        first = await proc.stderr.readline()
    assert b"recording" in first, first
    # The port is open: nothing the device writes from now on is flushed away.
    device.resume()

    def recorded_lines() -> bool:
        chunks = read_capture(out).chunks
        return b"".join(d for _, d in chunks).count(b"\n") >= done

    await wait_until(recorded_lines, timeout=20, message="the device's lines in the capture")
    code, err = await stop(proc, signal.SIGINT)
    assert code == 0, err


async def test_a_recorded_gps_replays_into_the_gateway_with_the_same_readings(
    tmp_path: Path,
) -> None:
    capture_file = tmp_path / "gps.jsonl"
    gps = PtyDevice("gps", tmp_path / "gps", rate=20, count=FIXES, seed=5, paused=True)
    async with gps as device:
        await record(device.link, capture_file, device, FIXES * LINES_PER_FIX)
    capture = read_capture(capture_file)
    assert capture.stopped == "signal"
    assert capture.setup.baudrate == 115200
    assert capture.chunks, "nothing recorded"
    recorded = b"".join(data for _, data in capture.chunks)
    header = json.loads(capture_file.read_text().splitlines()[0])
    assert header["format"] == FORMAT

    # What the receiver's bytes make, decoded straight from the capture.
    expected = NmeaDecoder("gps-1").feed(recorded, 0.0)
    assert expected.dead_letters == []
    assert sum(1 for s in expected.samples if s.sensor == "lat") == 2 * FIXES

    store = await Store.open(tmp_path / "data" / "readings.db", StoreSettings())
    try:
        replay = ReplayDevice(capture, tmp_path / "replayed", speed=4.0, paused=True)
        async with replay:
            settings = NmeaSettings(id="gps-1", port=str(replay.link), reconnect_min=0.02)
            driver = NmeaDriver(settings, store)
            async with running(driver):
                await wait_open(driver)
                replay.resume()
                await wait_until(replay.finished.is_set, timeout=20, message="replay done")
                await wait_until(
                    lambda: store.last_seq >= len(expected.samples),
                    timeout=20,
                    message="every reading stored",
                )
        stored = await store.read_after(0, 10 * len(expected.samples), None)
    finally:
        await store.close()
    got = [(r["sensor"], r["value"]) for r in (json.loads(s.payload) for s in stored)]
    assert got == [(s.sensor, s.value) for s in expected.samples]
    assert replay.bytes_written == len(recorded)


async def test_a_counter_recorded_to_its_last_byte_replays_byte_for_byte(tmp_path: Path) -> None:
    capture_file = tmp_path / "counter.jsonl"
    expected = counter_bytes(1, 50)
    async with PtyDevice("counter", tmp_path / "counter", rate=100, count=50, paused=True) as dev:
        proc = await asyncio.create_subprocess_exec(
            *gateway_cmd("record", "--port", str(dev.link), "--out", str(capture_file)),
            *("--max-bytes", str(len(expected))),
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            assert b"recording" in await proc.stderr.readline()
        dev.resume()
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
        # Stopped by itself at --max-bytes: a success, said on stderr.
        assert proc.returncode == 0, err
        assert b"stopped at --max-bytes" in err
    capture = read_capture(capture_file)
    assert capture.stopped == "max-bytes"
    assert b"".join(data for _, data in capture.chunks) == expected

    link = tmp_path / "dev" / "replayed"
    proc = await start_sim("replay", str(capture_file), "--link", str(link), "--delay", "0.2")
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(20):
            first = await proc.stderr.readline()
        assert f"({len(counter_bytes(1, 50))} bytes".encode() in first, first
        reader = PortReader(link)
        try:
            await wait_until(lambda: reader.lines() >= 50, timeout=20, message="50 lines")
            assert bytes(reader.data) == counter_bytes(1, 50)
        finally:
            reader.close()
    finally:
        code, err = await stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert b"replay finished" in err
    assert not link.exists()


def test_schedule_keeps_the_recorded_timing_and_loops() -> None:
    chunks = [(0.0, b"a"), (0.5, b"b"), (2.0, b"c")]
    capture = Capture(PortSetup("p", 9600), 0.0, chunks, 3.0, "duration")
    assert list(schedule(capture, 1.0, loop=False)) == chunks
    assert list(schedule(capture, 2.0, loop=False)) == [(0.0, b"a"), (0.25, b"b"), (1.0, b"c")]
    looped = list(islice(schedule(capture, 1.0, loop=True), 5))
    assert looped[3:] == [(3.0, b"a"), (3.5, b"b")]
    with pytest.raises(ValueError, match="speed"):
        next(schedule(capture, 0.0, loop=False))


def test_a_capture_killed_mid_line_keeps_its_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    writer = CaptureWriter(path, PortSetup("/dev/ttyS0", 4800, parity="E"), 1.0)
    writer.add(0.1, b"\x00\xff" * MAX_CHUNK)  # split into lines of at most MAX_CHUNK bytes
    with path.open("a") as f:
        f.write('{"t":0.2,"hex":"61')  # torn: no line end
    capture = read_capture(path)
    assert capture.setup == PortSetup("/dev/ttyS0", 4800, parity="E")
    assert [len(d) for _, d in capture.chunks] == [MAX_CHUNK, MAX_CHUNK]
    assert capture.stopped is None
    assert capture.end == 0.1


HEADER = json.dumps({"format": FORMAT, "version": 1, "port": "p", "baudrate": 9600, "started": 1})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty"),
        ("hello\n", r"x\.jsonl:1: not a JSON object"),
        ('{"format": "pcap"}\n', "not a capture"),
        (HEADER.replace('"version": 1', '"version": 9') + "\n", "capture version 9"),
        (HEADER.replace("9600", "-1") + "\n", "baudrate a positive integer"),
        (HEADER + '\n{"t": 1, "hex": "zz"}\n', r"x\.jsonl:2: hex must be"),
        (HEADER + '\n{"t": 1, "hex": ""}\n', "hex must be"),
        (HEADER + '\n{"t": -1, "hex": "00"}\n', "t must be a number"),
        (HEADER + '\n{"t": 2, "hex": "00"}\n{"t": 1, "hex": "00"}\n', r":3: t goes back"),
        (HEADER + '\n{"end": 1, "chunks": 3, "bytes": 0}\n', "trailer counts 3 chunks"),
        (HEADER + '\n{"end": 1, "chunks": 0, "bytes": 0}\n{"t": 2, "hex": "00"}\n', "after the"),
        (HEADER + "\n" + "[" * 100_000 + "\n", "shorter"),
    ],
)
def test_a_bad_capture_is_named_by_its_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(text)
    with pytest.raises(CaptureError, match=error):
        read_capture(path)


def test_record_and_replay_refuse_bad_usage_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().err

    code, err = run("record", "--port", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert code == 1
    assert err.startswith("edge-gateway record: cannot open")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    code, err = run("record", "--port", "p", "--out", "o", "--baudrate", "fast")
    assert code == 2
    assert "baudrate" in err
    (tmp_path / "bad.jsonl").write_text("not json\n")
    code, err = run("sim", "replay", str(tmp_path / "bad.jsonl"), "--link", str(tmp_path / "l"))
    assert code == 2
    assert err.strip().endswith("bad.jsonl:1: not a JSON object")
    code, err = run("sim", "replay", "--link", str(tmp_path / "l"))
    assert code == 2
    assert "FILE goes with replay" in err
