"""The technician's endpoints: history in buckets, dead letters, the commands allowed.

Real store files, a real server on loopback; hostile parameters get a 400 naming the
rule and are counted, a flood of queries is refused rather than queued, and a query
past its cost bound is cut off.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.local.keys import QUERIES
from gateway.local.log_queries import MAX_PENDING
from gateway.reading import DeadLetter, Sample
from gateway.settings import CommandSettings, Settings, WriteRule
from gateway.store import read_only
from tests.support.local import LocalGateway, local_gateway, parse_samples

HOUR = 3600


def keep_a_day(settings: Settings) -> Settings:
    """Readings older than an hour stay (by default the log keeps sent ones an hour)."""
    return replace(settings, store=replace(settings.store, history=24 * HOUR))


async def fill_last_hour(gw: LocalGateway, now: float) -> None:
    """thermo-1 t = 0, 1, 2, … one a second over the last hour, counter-1 n between them."""
    samples = []
    for i in range(HOUR):
        ts = now - HOUR + i + 0.5
        samples.append(Sample("thermo-1", "t", float(i), ts))
        samples.append(Sample("counter-1", "n", i, ts))
    gw.store.put_samples(samples)
    gw.store.put_samples([Sample("thermo-1", "t", "not a number", now - 1)])
    await gw.store.flush()


async def test_history_is_bucketed_on_the_server(tmp_path: Path) -> None:
    now = time.time()
    async with local_gateway(tmp_path, configure=keep_a_day) as gw:
        await fill_last_hour(gw, now)
        body = await gw.get_json(
            "/api/v1/history", device="thermo-1", sensor="t", window="1h", points=60, end=str(now)
        )
        assert body["columns"] == ["t", "min", "max", "mean", "count"]
        assert body["bucket_seconds"] == 60
        assert not body["sampled"]
        buckets = body["buckets"]
        assert len(buckets) == 60
        for index, (t, low, high, mean, count) in enumerate(buckets):
            assert t == pytest.approx(now - HOUR + 60 * index)
            assert (low, high, count) == (60 * index, 60 * index + 59, 60)
            assert mean == pytest.approx(60 * index + 29.5)
        # Zoomed in: a quarter of an hour ending ten minutes ago, at a finer step.
        zoom = await gw.get_json(
            "/api/v1/history", device="thermo-1", sensor="t", window="15m", end=str(now - 600)
        )
        assert zoom["buckets"][0][1] == HOUR - 600 - 900
        assert zoom["buckets"][-1][2] == HOUR - 600 - 1
        # The last day holds the same hour; an unknown sensor has no buckets.
        day = await gw.get_json("/api/v1/history", device="counter-1", sensor="n", window="1d")
        assert sum(b[4] for b in day["buckets"]) == HOUR
        none = await gw.get_json("/api/v1/history", device="counter-1", sensor="x")
        assert none["buckets"] == []


async def test_a_big_window_is_sampled_within_the_row_bound(tmp_path: Path) -> None:
    now = time.time()
    async with local_gateway(tmp_path, configure=keep_a_day) as gw:
        await fill_last_hour(gw, now)
    query = read_only.HistoryQuery("thermo-1", "t", now - HOUR, now, 20)
    with read_only.connect(tmp_path) as conn:
        found = read_only.history(conn, query, max_rows=400)
    assert found.sampled
    assert found.rows_in_window == 2 * HOUR + 1
    assert found.rows_scanned <= 400
    # Runs spread over the whole window: every bucket is seen, within its true range.
    assert len(found.buckets) == 20
    for index, bucket in enumerate(found.buckets):
        assert 180 * index <= bucket.min <= bucket.max <= 180 * index + 179


BAD_HISTORY = [
    ({}, "device is required"),
    ({"device": "thermo-1"}, "sensor is required"),
    ({"device": "thermo-*", "sensor": "t"}, "device must be a device id"),
    ({"device": "x" * 129, "sensor": "t"}, "device must be a device id"),
    ({"device": "thermo-1", "sensor": "t" * 65}, "sensor is required"),
    ({"device": "thermo-1", "sensor": "t", "window": "2d"}, "window must be from 10 s to 1d"),
    ({"device": "thermo-1", "sensor": "t", "window": "99999999h"}, "window must be a duration"),
    ({"device": "thermo-1", "sensor": "t", "window": "1y"}, "window must be a duration"),
    ({"device": "thermo-1", "sensor": "t", "window": "1s"}, "window must be from 10 s"),
    ({"device": "thermo-1", "sensor": "t", "window": "-1h"}, "window must be a duration"),
    ({"device": "thermo-1", "sensor": "t", "points": "1000000"}, "points must be between"),
    ({"device": "thermo-1", "sensor": "t", "points": "1e3"}, "points must be an integer"),
    ({"device": "thermo-1", "sensor": "t", "end": "nan"}, "end must be a time"),
    ({"device": "thermo-1", "sensor": "t", "end": "1" * 40}, "end must be a time"),
    ({"device": "thermo-1", "sensor": "t", "end": "99999999999"}, "end must not be more"),
]


async def test_hostile_parameters_are_refused_and_counted(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        for params, error in BAD_HISTORY:
            async with gw.session.get(
                gw.url("/api/v1/history"), headers=gw.auth(), params=params
            ) as resp:
                assert resp.status == 400, params
                assert error in (await resp.json())["error"], params
        bad_dead = [{"limit": "0"}, {"limit": "201"}, {"before": "x"}, {"device": "a b"}]
        for params in bad_dead:
            async with gw.session.get(
                gw.url("/api/v1/dead-letters"), headers=gw.auth(), params=params
            ) as resp:
                assert resp.status == 400, params
        for path in ("/api/v1/history", "/api/v1/dead-letters", "/api/v1/commands"):
            async with gw.session.get(gw.url(path), headers=gw.auth("wrong")) as resp:
                assert resp.status == 401
        async with gw.session.get(gw.url("/metrics")) as resp:
            metrics = parse_samples(await resp.text())
        refused = len(BAD_HISTORY) + len(bad_dead)
        assert metrics['edge_gateway_local_requests_refused_total{code="400"}'] == refused
        assert metrics['edge_gateway_local_requests_refused_total{code="401"}'] == 3


async def test_queries_beyond_the_bound_are_refused_not_queued(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        queries = gw.server.app[QUERIES]
        release = threading.Event()
        held = [
            asyncio.create_task(queries.run(lambda _conn: release.wait(10)))
            for _ in range(MAX_PENDING)
        ]
        await asyncio.sleep(0)
        try:
            async with gw.session.get(gw.url("/api/v1/dead-letters"), headers=gw.auth()) as resp:
                assert resp.status == 429
                assert "too many log queries" in (await resp.json())["error"]
        finally:
            release.set()
        assert all(await asyncio.gather(*held))
        await gw.get_json("/api/v1/dead-letters")


async def test_a_query_past_its_cost_bound_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with local_gateway(tmp_path) as gw:
        await fill_last_hour(gw, time.time())
        monkeypatch.setattr(read_only, "MAX_STEPS", 1)
        async with gw.session.get(
            gw.url("/api/v1/history"),
            headers=gw.auth(),
            params={"device": "thermo-1", "sensor": "t"},
        ) as resp:
            assert resp.status == 503
            assert "shorter window" in (await resp.json())["error"]


async def test_dead_letters_with_their_raw_bytes_by_device(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        now = time.time()
        for i in range(5):
            gw.store.put_dead_letter(
                DeadLetter("counter-1", "not UTF-8", b"n=\xff%d\x00\n" % i, now)
            )
        gw.store.put_dead_letter(DeadLetter("thermo-1", "no value", b"t=", now))
        await gw.store.flush()
        first = await gw.get_json("/api/v1/dead-letters", device="counter-1", limit=3)
        letters = first["dead_letters"]
        # Newest first.
        assert [d["hex"] for d in letters] == [(b"n=\xff%d\x00\n" % i).hex() for i in (4, 3, 2)]
        assert letters[0]["text"] == "n=\\xff4\\x00\\n"
        assert {d["device"] for d in letters} == {"counter-1"}
        assert letters[0]["reason"] == "not UTF-8"
        older = await gw.get_json(
            "/api/v1/dead-letters", device="counter-1", limit=3, before=first["next"]
        )
        assert [d["text"][6] for d in older["dead_letters"]] == ["1", "0"]
        assert older["next"] is None
        everyone = await gw.get_json("/api/v1/dead-letters")
        assert everyone["dead_letters"][0]["device"] == "thermo-1"
        assert len(everyone["dead_letters"]) == 6


async def test_the_commands_the_panel_may_offer(tmp_path: Path) -> None:
    def allow(settings: Settings) -> Settings:
        commands = CommandSettings(
            allow=("ping", "device.write"),
            writes=(WriteRule("thermo-1", "setpoint", 5, 30),),
        )
        return replace(settings, commands=commands)

    async with local_gateway(tmp_path, configure=allow) as gw:
        body = await gw.get_json("/api/v1/commands")
    assert body == {
        "available": False,  # no command router in this view
        "allow": ["ping", "device.write"],
        "writes": [{"device": "thermo-1", "sensor": "setpoint", "min": 5, "max": 30}],
        "signed": False,
        "devices": ["counter-1", "thermo-1"],
    }
