"""The soak campaign's checks catch what they are there for: a planted leak, a lost
reading, a reused seq, readings out of order; and they let pass what is allowed: a burst
that comes and goes, duplicates, what only a damaged file held."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.reading import Sample
from tests.soak import report
from tests.soak.campaign import trends
from tests.soak.ledger import DatabaseRead, Ledger, canonical, judge, read_database
from tests.soak.sampler import Sample as SoakSample
from tests.soak.trend import TrendBound, fit, theil_sen
from tests.support.mosquitto import Received
from tests.support.store import opened

FDS = TrendBound("fds", "fds", floor=8.0, per_hour=8.0)


def reading(seq: int, value: float, device: str = "dev-a") -> dict[str, Any]:
    return {"seq": seq, "ts": 1.7e9 + seq, "device": device, "sensor": "n", "value": value}


def telemetry(*readings: dict[str, Any]) -> list[Received]:
    """One message per reading, as the gateway publishes them."""
    return [
        Received(
            f"edge/gw-test/{r['device']}/telemetry",
            json.dumps({"gateway": "gw-test", "device": r["device"], "readings": [r]}).encode(),
            retain=False,
        )
        for r in readings
    ]


def committed(*readings: dict[str, Any], cursor: int | None = None) -> DatabaseRead:
    return DatabaseRead({r["seq"]: canonical(r) for r in readings}, cursor)


def test_theil_sen_finds_the_line_through_outliers() -> None:
    ts = [float(t) for t in range(100)]
    ys = [3.0 + 0.5 * t for t in ts]
    ys[10] = ys[50] = 1000.0
    slope, intercept = theil_sen(ts, ys)
    assert slope == pytest.approx(0.5)
    assert intercept == pytest.approx(3.0)


def test_a_burst_that_comes_and_goes_is_no_trend() -> None:
    # 25 fds, 6 more for 10 s of every 80 s (a reconnect, a port reopened), for 10 minutes.
    ts = [2.0 * i for i in range(300)]
    fds = [25.0 + (6.0 if i % 40 < 5 else 0.0) for i in range(300)]
    assert fit(FDS, ts, fds).ok


def test_one_fd_more_every_20_seconds_is_a_trend() -> None:
    ts = [2.0 * i for i in range(300)]
    fds = [25.0 + i // 10 for i in range(300)]
    trend = fit(FDS, ts, fds)
    assert not trend.ok
    assert trend.rise == pytest.approx(30, abs=1)


def test_a_committed_reading_never_delivered_is_lost() -> None:
    ledger = Ledger()
    ledger.add(committed(reading(1, 1), reading(2, 2), reading(3, 3)))
    verdict = judge(ledger, telemetry(reading(1, 1), reading(3, 3)))
    assert verdict.lost == [2]
    assert not verdict.ok


def test_duplicates_with_the_same_content_pass() -> None:
    ledger = Ledger()
    ledger.add(committed(reading(1, 1), reading(2, 2)))
    verdict = judge(ledger, telemetry(reading(1, 1), reading(2, 2), reading(1, 1)))
    assert verdict.ok
    assert verdict.duplicates == 1


def test_a_seq_delivered_with_other_content_is_reused() -> None:
    ledger = Ledger()
    ledger.add(committed(reading(1, 1), reading(2, 2)))
    verdict = judge(ledger, telemetry(reading(1, 1), reading(2, 2), reading(2, 7)))
    assert [r.seq for r in verdict.reused] == [2]
    assert not verdict.ok


def test_a_fresh_database_counting_again_is_reuse() -> None:
    ledger = Ledger()
    ledger.add_damaged(committed(reading(1, 1), reading(2, 2), cursor=2))
    ledger.add(committed(reading(1, 9)))
    verdict = judge(ledger, telemetry(reading(1, 1), reading(2, 2), reading(1, 9)))
    assert {r.seq for r in verdict.reused} == {1}


def test_only_unacknowledged_readings_of_a_damaged_file_are_excluded() -> None:
    ledger = Ledger()
    ledger.add_damaged(committed(*(reading(s, s) for s in range(1, 6)), cursor=3))
    ledger.add(committed(reading(6, 6)))
    # 4 and 5 were only in the damaged file: excluded; 5 arrived anyway.
    verdict = judge(ledger, telemetry(*(reading(s, s) for s in (1, 2, 3, 5, 6))))
    assert verdict.ok
    assert (verdict.excluded, verdict.excluded_arrived) == (2, 1)
    # 3 was acknowledged: it must have arrived.
    verdict = judge(ledger, telemetry(*(reading(s, s) for s in (1, 2, 6))))
    assert verdict.lost == [3]


def test_values_going_back_are_out_of_order() -> None:
    ledger = Ledger()
    ledger.add(committed(reading(1, 1), reading(2, 5), reading(3, 4, device="dev-b")))
    ledger.add(committed(reading(4, 3)))
    verdict = judge(
        ledger,
        telemetry(reading(1, 1), reading(2, 5), reading(3, 4, device="dev-b"), reading(4, 3)),
    )
    assert verdict.out_of_order == ["dev-a"]


async def test_a_real_store_file_reads_back_with_its_cursor(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await store.register_consumer("mqtt")
        store.put_samples([Sample("dev-a", "n", float(i), 1.7e9 + i) for i in range(5)])
        await store.flush()
        await store.ack("mqtt", 2)
    read = read_database(tmp_path / "readings.db")
    assert sorted(read.rows) == [1, 2, 3, 4, 5]
    assert json.loads(read.rows[3])["value"] == 2.0
    assert read.cursor == 2
    assert read.error is None


def test_the_report_says_what_failed_and_draws_every_series(tmp_path: Path) -> None:
    samples = [
        SoakSample(
            t=float(t),
            pid=100 if t < 30 else 200,
            rss=(40 + t) * report.MIB,
            fds=25,
            cpu=10.0,
            depth=t % 7,
            last_seq=10 * t,
            acked_seq=10 * t - t % 7,
            dropped=0,
            lag=0.5,
        )
        for t in range(120)
    ]
    outcome = report.Outcome(
        campaign="test",
        parameters={"duration": 120},
        started_utc="2026-01-01 00:00:00 UTC",
        events=[
            report.FaultEvent("kill -9", 29.0, 31.0, "pid 100 killed, restarted as 200"),
            report.FaultEvent("disk full", 50.0, 60.0, "FAILED: Failed: oops | x\nlog line"),
        ],
        samples=samples,
        round_ends=[60.0, 90.0, 119.0],
        error="Failed: gateway exited with 1:\nTraceback (most recent call last):",
    )
    outcome.trends = trends(outcome.samples, outcome.round_ends)
    summary = report.write(outcome, tmp_path).read_text()
    assert summary.startswith("# Soak report: test campaign: FAIL")
    assert "- campaign aborted: Failed: gateway exited with 1:" in summary
    assert "  Traceback (most recent call last):" in summary
    assert "| disk full | FAILED: Failed: oops / x |" in summary
    assert "RSS trend | FAIL" in summary  # 1 MiB a second
    for png in ("overview", "rss", "fds", "depth", "lag", "cpu"):
        assert (tmp_path / f"{png}.png").read_bytes().startswith(b"\x89PNG")
    assert len((tmp_path / "samples.csv").read_text().splitlines()) == 121
