"""The landing: each (gateway, seq) once, a batch all or nothing, holes found, on SQLite
and on a private PostgreSQL server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cloud.landing import BadReading, Landing, LandingError, open_landing
from tests.support.landing import landed_bodies


def reading(seq: int, device: str = "thermo-1") -> dict[str, Any]:
    return {"seq": seq, "ts": 1764086400.0 + seq, "device": device, "sensor": "t", "value": 21.5}


@pytest.fixture(params=["sqlite", "postgresql"])
def landing_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'landing.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def landing(landing_url: str) -> AsyncIterator[Landing]:
    opened = await open_landing(landing_url)
    yield opened
    await opened.close()


async def test_duplicates_land_once(landing: Landing, landing_url: str) -> None:
    assert await landing.land("gw-1", [reading(s) for s in range(1, 6)]) == 5
    # Again, overlapping, and twice within one batch: only the new ones count.
    again = [reading(s) for s in (4, 5, 6, 6, 7)]
    assert await landing.land("gw-1", again) == 2
    # The same seq from another gateway is another reading.
    assert await landing.land("gw-2", [reading(1)]) == 1
    bodies = await landed_bodies(landing_url, "gw-1")
    assert sorted(bodies) == list(range(1, 8))
    assert bodies[6] == '{"seq":6,"ts":1764086406.0,"device":"thermo-1","sensor":"t","value":21.5}'
    assert landing.conflicts == 0
    # A copy whose content differs is not landed, and is counted.
    changed = reading(7)
    changed["value"] = 99
    assert await landing.land("gw-1", [changed, reading(8)]) == 1
    assert landing.conflicts == 1
    assert (await landed_bodies(landing_url, "gw-1"))[7] == bodies[7]


async def test_a_batch_with_a_bad_reading_lands_nothing(landing: Landing, landing_url: str) -> None:
    bad: dict[str, Any] = reading(3)
    bad["seq"] = "3"
    with pytest.raises(BadReading, match=r"readings\[2\]: seq"):
        await landing.land("gw-1", [reading(1), reading(2), bad, reading(4)])
    assert await landed_bodies(landing_url, "gw-1") == {}
    for broken, message in (
        ({"seq": 1, "ts": float("nan"), "device": "d", "sensor": "t", "value": 1}, "ts"),
        ({"seq": 0, "ts": 1.0, "device": "d", "sensor": "t", "value": 1}, "seq"),
        ({"seq": 1, "ts": 1.0, "device": "", "sensor": "t", "value": 1}, "device"),
        ({"seq": 1, "ts": 1.0, "device": "d", "sensor": "t"}, "value"),
        ([1, 2], "object"),
    ):
        with pytest.raises(BadReading, match=message):
            await landing.land("gw-1", [broken])  # type: ignore[list-item]
    with pytest.raises(LandingError, match="gateway"):
        await landing.land("", [reading(1)])
    # The landing still works after refusing all of that.
    assert await landing.land("gw-1", [reading(1)]) == 1


async def test_holes_older_than_a_bound_are_reported(landing: Landing) -> None:
    await landing.land("gw-1", [reading(s) for s in (1, 2, 5, 6, 9)])
    await landing.land("gw-2", [reading(s) for s in (1, 2, 3)])
    holes = await landing.gaps(older_than=0)
    assert [(g.gateway, g.after, g.before) for g in holes] == [("gw-1", 2, 5), ("gw-1", 6, 9)]
    assert all(g.since <= time.time() for g in holes)
    # A hole whose next reading landed a moment ago may still be filling.
    assert await landing.gaps(older_than=3600) == []


async def test_a_bad_url_is_refused_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(LandingError, match="expected sqlite"):
        await open_landing("mysql://nowhere")
    with pytest.raises(LandingError, match="cannot open"):
        await open_landing(f"sqlite://{tmp_path / 'missing-dir' / 'x.db'}")


async def test_several_gateways_land_in_one_call(landing: Landing, landing_url: str) -> None:
    batches = {"gw-1": [reading(s) for s in (1, 2, 3)], "gw-2": [reading(1), reading(2)]}
    assert await landing.land_many(batches) == 5
    # Again, with one new reading each: the others are duplicates.
    batches = {"gw-1": [reading(s) for s in (3, 4)], "gw-2": [reading(2), reading(3)]}
    assert await landing.land_many(batches) == 2
    assert sorted(await landed_bodies(landing_url, "gw-1")) == [1, 2, 3, 4]
    assert sorted(await landed_bodies(landing_url, "gw-2")) == [1, 2, 3]
    assert await landing.land_many({}) == 0
    # One bad reading of one gateway: no gateway's readings land.
    bad: dict[str, Any] = reading(9)
    del bad["value"]
    with pytest.raises(BadReading, match="value"):
        await landing.land_many({"gw-3": [reading(1)], "gw-1": [reading(5), bad]})
    assert await landed_bodies(landing_url, "gw-3") == {}
    assert sorted(await landed_bodies(landing_url, "gw-1")) == [1, 2, 3, 4]
