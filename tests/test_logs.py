"""Logging: one line per event, journald-aware, and floods of one message summarised."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from gateway.logs import LineFormatter, RepeatFilter, setup_logging, stream_is_journal
from tests.support.common import wait_until_sync

ROOT = Path(__file__).resolve().parents[1]


def record(
    msg: str, *args: object, name: str = "drivers.serial_line", level: int = logging.WARNING
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def guard() -> Iterator[tuple[RepeatFilter, FakeClock, list[logging.LogRecord]]]:
    clock = FakeClock()
    emitted: list[logging.LogRecord] = []
    repeat_filter = RepeatFilter(emitted.append, window=10.0, clock=clock)
    yield repeat_filter, clock, emitted
    repeat_filter.flush()


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


# Line format -----------------------------------------------------------


def test_line_outside_systemd_starts_with_an_iso_timestamp() -> None:
    rec = record("bad line %r", "x")
    line = LineFormatter(journal=False).format(rec)
    match = re.fullmatch(r"(\S+) WARNING drivers\.serial_line: bad line 'x'", line)
    assert match, line
    stamp = datetime.fromisoformat(match[1])
    assert stamp.tzinfo is not None
    assert abs(stamp.timestamp() - rec.created) < 0.001


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.CRITICAL, "<2>CRITICAL"),
        (logging.ERROR, "<3>ERROR"),
        (logging.WARNING, "<4>WARNING"),
        (logging.INFO, "<6>INFO"),
        (logging.DEBUG, "<7>DEBUG"),
    ],
)
def test_line_for_the_journal_has_its_priority_and_no_timestamp(level: int, prefix: str) -> None:
    line = LineFormatter(journal=True).format(record("port %s gone", "/dev/x", level=level))
    assert line == f"{prefix} drivers.serial_line: port /dev/x gone"


def test_line_breaks_in_messages_cannot_forge_lines() -> None:
    line = LineFormatter(journal=True).format(record("bad line %r", "x\nCRITICAL fake: y\r"))
    assert "\n" not in line
    assert line == "<4>WARNING drivers.serial_line: bad line 'x\\nCRITICAL fake: y\\r'"
    text = LineFormatter(journal=True).format(record("got %s", "a\nb"))
    assert text == "<4>WARNING drivers.serial_line: got a\\nb"


def test_traceback_stays_on_the_event_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("gateway.app", logging.ERROR, __file__, 1, "failed", (), None)
        rec.exc_info = sys.exc_info()
    line = LineFormatter(journal=True).format(rec)
    assert "\n" not in line
    assert line.startswith("<3>ERROR gateway.app: failed\\nTraceback")
    assert line.endswith("ValueError: boom")


# Is stdout the journal? ------------------------------------------------


def test_journal_stream_is_recognised_by_device_and_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "a").open("w") as journal, (tmp_path / "b").open("w") as other:
        info = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert stream_is_journal(journal)
        assert not stream_is_journal(other)
        assert not stream_is_journal(io.StringIO())
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not stream_is_journal(journal)


def run_logging_child(tmp_path: Path, journal: bool) -> str:
    code = (
        "import logging\n"
        "from gateway.logs import setup_logging\n"
        "setup_logging('info')\n"
        "logging.getLogger('gateway.app').info('hello %s', 'world')\n"
        "logging.getLogger('gateway.app').debug('not shown')\n"
    )
    out = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with out.open("w") as stdout:
        if journal:
            info = os.fstat(stdout.fileno())
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        subprocess.run(
            [sys.executable, "-c", code], stdout=stdout, env=env, cwd=ROOT, check=True, timeout=60
        )
    return out.read_text(encoding="utf-8")


def test_under_systemd_lines_have_no_timestamp(tmp_path: Path) -> None:
    assert run_logging_child(tmp_path, journal=True) == "<6>INFO gateway.app: hello world\n"


def test_elsewhere_lines_have_a_timestamp(tmp_path: Path) -> None:
    output = run_logging_child(tmp_path, journal=False)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\S+ INFO gateway\.app: hello world\n", output), output


# Flood guard -----------------------------------------------------------


def test_repeats_within_the_window_are_summarised_when_it_ends(
    guard: tuple[RepeatFilter, FakeClock, list[logging.LogRecord]],
) -> None:
    repeat_filter, clock, emitted = guard
    assert repeat_filter.filter(record("bad line %r", "first"))
    for i in range(5):
        clock.now = i + 1.0
        assert not repeat_filter.filter(record("bad line %r", f"n{i}"))
    assert emitted == []
    clock.now = 10.0
    assert repeat_filter.filter(record("bad line %r", "next window"))
    (summary,) = emitted
    assert summary.getMessage() == "bad line 'n4' (repeated 5 times in 10s)"
    assert (summary.name, summary.levelno) == ("drivers.serial_line", logging.WARNING)
    assert repeat_filter.filter(summary)


def test_a_message_that_did_not_repeat_has_no_summary(
    guard: tuple[RepeatFilter, FakeClock, list[logging.LogRecord]],
) -> None:
    repeat_filter, clock, emitted = guard
    assert repeat_filter.filter(record("port opened"))
    clock.now = 100.0
    assert repeat_filter.filter(record("port opened"))
    assert emitted == []


def test_distinct_messages_pass(
    guard: tuple[RepeatFilter, FakeClock, list[logging.LogRecord]],
) -> None:
    repeat_filter, _, emitted = guard
    assert repeat_filter.filter(record("bad line %r", "a", name="drivers.a"))
    assert repeat_filter.filter(record("bad line %r", "a", name="drivers.b"))
    assert repeat_filter.filter(record("bad line %r", "a", level=logging.ERROR))
    assert repeat_filter.filter(record("bad frame %r", "a"))
    assert emitted == []


def test_templates_without_words_are_compared_as_written(
    guard: tuple[RepeatFilter, FakeClock, list[logging.LogRecord]],
) -> None:
    repeat_filter, clock, emitted = guard
    assert repeat_filter.filter(record("%s: %s", "mqtt", "connection refused"))
    assert repeat_filter.filter(record("%s: %s", "mqtt", "not authorised"))
    assert not repeat_filter.filter(record("%s: %s", "mqtt", "not authorised"))
    assert repeat_filter.filter(record("%(uplink)s: %(error)r", {"uplink": "a", "error": 1}))
    clock.now = 10.0
    repeat_filter.filter(record("next"))
    assert [r.getMessage() for r in emitted] == ["mqtt: not authorised (repeated 1 time in 10s)"]


def test_each_subject_named_first_has_its_own_window(
    guard: tuple[RepeatFilter, FakeClock, list[logging.LogRecord]],
) -> None:
    repeat_filter, _, emitted = guard
    assert repeat_filter.filter(record("%s: read %d readings", "dev-a", 196))
    assert repeat_filter.filter(record("%s: read %d readings", "dev-b", 130))
    assert not repeat_filter.filter(record("%s: read %d readings", "dev-a", 197))
    assert emitted == []


def test_interleaved_floods_are_each_summarised(
    guard: tuple[RepeatFilter, FakeClock, list[logging.LogRecord]],
) -> None:
    repeat_filter, clock, emitted = guard
    passed = [
        repeat_filter.filter(record("bad line %r", "x", name=f"drivers.{device}"))
        for _ in range(3)
        for device in ("a", "b")
    ]
    assert passed == [True, True, False, False, False, False]
    clock.now = 10.0
    assert repeat_filter.filter(record("something else"))
    assert sorted((r.name, r.getMessage()) for r in emitted) == [
        ("drivers.a", "bad line 'x' (repeated 2 times in 10s)"),
        ("drivers.b", "bad line 'x' (repeated 2 times in 10s)"),
    ]


def test_flush_sends_pending_summaries(
    guard: tuple[RepeatFilter, FakeClock, list[logging.LogRecord]],
) -> None:
    repeat_filter, _, emitted = guard
    for _ in range(4):
        repeat_filter.filter(record("bad line"))
    repeat_filter.flush()
    assert [r.getMessage() for r in emitted] == ["bad line (repeated 3 times in 10s)"]
    assert repeat_filter.filter(record("bad line"))


def test_concurrent_floods_count_every_repeat() -> None:
    emitted: list[logging.LogRecord] = []
    repeat_filter = RepeatFilter(emitted.append, window=3600.0)
    passed: list[bool] = []

    def flood() -> None:
        results = [repeat_filter.filter(record("bad line %r", "x")) for _ in range(500)]
        passed.extend(results)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    repeat_filter.flush()
    assert passed.count(True) == 1
    assert [r.getMessage() for r in emitted] == ["bad line 'x' (repeated 1999 times in 3600s)"]


# Installed on the root logger -------------------------------------------


@pytest.mark.usefixtures("root_logging")
def test_summary_appears_when_the_window_ends_with_nothing_else_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("INFO", repeat_window=0.2)
    log = logging.getLogger("drivers.serial_line")
    for i in range(3):
        log.warning("bad line %r", i)
    output: list[str] = []

    def summary_written() -> bool:
        output.append(capsys.readouterr().out)
        return "repeated" in "".join(output)

    wait_until_sync(summary_written, message="the summary line")
    lines = "".join(output).splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("WARNING drivers.serial_line: bad line 0")
    assert lines[1].endswith("WARNING drivers.serial_line: bad line 2 (repeated 2 times in 0.2s)")


@pytest.mark.usefixtures("root_logging")
def test_setup_again_replaces_the_handler_and_closing_flushes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("INFO")
    handler = setup_logging("warning")
    root = logging.getLogger()
    assert [h for h in root.handlers if type(h) is type(handler)] == [handler]
    assert root.level == logging.WARNING
    log = logging.getLogger("gateway.store")
    log.info("not shown")
    for _ in range(3):
        log.warning("disk almost full")
    handler.close()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "WARNING gateway.store: disk almost full",
        "WARNING gateway.store: disk almost full (repeated 2 times in 10s)",
    ]
