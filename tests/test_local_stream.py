"""The live WebSocket stream: access rules, replay-to-live seam, filters, slow clients, limits."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from pytest_mock import MockerFixture

from gateway.local.fanout_pace import INITIAL_COST
from gateway.local.keys import HUB
from gateway.local.stream import StreamClient, StreamCounters, text_frame
from gateway.local.stream.frames import commit_messages as _messages
from gateway.reading import StoredReading
from gateway.store import Store
from tests.support.common import wait_for_value, wait_until
from tests.support.local import TOKEN, LocalGateway, local_gateway, local_settings, receive_json
from tests.support.mqtt_uplink import put

STREAM = "/api/v1/stream"


async def open_stream(
    gw: LocalGateway,
    *,
    session: aiohttp.ClientSession | None = None,
    **params: str | int,
) -> aiohttp.ClientWebSocketResponse:
    return await (session or gw.session).ws_connect(
        gw.url(STREAM), params={"token": TOKEN, **params}
    )


class Collector:
    """Reads one stream in a task, keeping every reading's seq and every other message."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seqs: list[int] = []
        self.devices: set[str] = set()
        self.others: list[dict[str, Any]] = []
        # Every seq accounted for, in arrival order: received, or announced in a gap.
        self.covered: list[int] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for msg in self.ws:
            message = json.loads(msg.data)
            if message["type"] == "readings":
                self.seqs += [r["seq"] for r in message["readings"]]
                self.devices.update(r["device"] for r in message["readings"])
                self.covered += [r["seq"] for r in message["readings"]]
            else:
                if message["type"] == "gap":
                    self.covered += range(message["from"], message["to"] + 1)
                self.others.append(message)

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    async def stop(self) -> None:
        await self.ws.close()
        await self.task


def refused_status(exc_info: pytest.ExceptionInfo[aiohttp.WSServerHandshakeError]) -> int:
    return exc_info.value.status


async def test_missing_or_wrong_token_is_refused_at_the_handshake(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        attempts: list[dict[str, Any]] = [
            {},
            {"params": {"token": "wrong"}},
            {"headers": {"Authorization": "Bearer wrong"}},
            {"headers": {"Authorization": f"Basic {TOKEN}"}},
        ]
        for attempt in attempts:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await gw.session.ws_connect(gw.url(STREAM), **attempt)
            assert refused_status(refused) == 401
        accepted: list[dict[str, Any]] = [{"params": {"token": TOKEN}}, {"headers": gw.auth()}]
        for attempt in accepted:
            ws = await gw.session.ws_connect(gw.url(STREAM), **attempt)
            assert (await receive_json(ws))["type"] == "hello"
            await ws.close()


async def test_foreign_origin_is_refused_and_own_or_listed_origins_pass(tmp_path: Path) -> None:
    local = local_settings(allowed_origins=("https://panel.example:8443",))
    async with local_gateway(tmp_path, local=local) as gw:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await gw.session.ws_connect(
                gw.url(STREAM), params={"token": TOKEN}, origin="http://evil.example"
            )
        assert refused_status(refused) == 403
        for origin in (gw.origin, "https://panel.example:8443", None):
            ws = await gw.session.ws_connect(gw.url(STREAM), params={"token": TOKEN}, origin=origin)
            assert (await receive_json(ws))["type"] == "hello"
            await ws.close()


async def test_hello_then_live_readings_in_seq_order(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        gw.put("thermo-1", "t", [1.0, 2.0])
        await gw.store.flush()
        ws = await open_stream(gw)
        assert await receive_json(ws) == {"type": "hello", "gateway": "gw-test", "last_seq": 2}
        gw.put("thermo-1", "t", [3.0])
        gw.put("counter-1", "n", [7])
        message = await receive_json(ws)
        assert message["type"] == "readings"
        assert [(r["seq"], r["device"], r["value"]) for r in message["readings"]] == [
            (3, "thermo-1", 3.0),
            (4, "counter-1", 7),
        ]
        await ws.close()


async def test_reads_and_commits_go_unpaced_while_a_client_watches(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        assert gw.store.paced
        first = await open_stream(gw)
        second = await open_stream(gw)
        await wait_until(lambda: not gw.store.paced, message="unpaced while watched")
        await first.close()
        await asyncio.sleep(0)
        assert not gw.store.paced  # one client still watches
        await second.close()
        await wait_until(lambda: gw.store.paced, message="paced again when nobody watches")


async def test_commits_are_spaced_by_the_measured_cost_of_fanning_out(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    async with local_gateway(tmp_path) as gw:
        hub = gw.server.app[HUB]
        set_watched = mocker.spy(gw.store, "set_watched")
        clients = [Collector(await open_stream(gw)) for _ in range(2)]
        gw.put("thermo-1", "t", [1.0, 2.0, 3.0])
        await wait_until(
            lambda: all(len(c.seqs) == 3 for c in clients), message="three readings each"
        )
        # Every sweep was timed, and the store was given the spacing that implies.
        assert hub.pace.cost_per_client != INITIAL_COST
        assert set_watched.call_args.args == (hub.pace.spacing(2),)
        for client in clients:
            await client.stop()
        await wait_until(lambda: gw.store.paced, message="paced again when nobody watches")
        assert set_watched.call_args.args == (None,)


async def test_replay_joins_live_with_no_gap_and_no_duplicate_under_load(tmp_path: Path) -> None:
    local = local_settings(client_queue=1_000_000)
    async with local_gateway(tmp_path, local=local) as gw:
        gw.put("thermo-1", "t", [float(i) for i in range(3000)])
        await gw.store.flush()
        stop = asyncio.Event()

        async def produce() -> None:
            n = 0
            while not stop.is_set():
                gw.put("counter-1", "n", list(range(n, n + 20)))
                n += 20
                # Paces the writes (about 20,000 readings/s at most) and lets commits,
                # replays and sends interleave with them.
                await asyncio.sleep(0.001)

        producer = asyncio.create_task(produce())
        starts = (0, 1, 1234, 2999, 3000)
        collectors = [Collector(await open_stream(gw, since=since)) for since in starts]
        # Every client is past its replay and receiving live readings.
        joined = gw.store.last_seq + 2000
        await wait_until(lambda: all(c.last > joined for c in collectors), timeout=60)
        stop.set()
        await producer
        final = await gw.store.flush()
        await wait_until(lambda: all(c.last == final for c in collectors), timeout=30)
        for since, collector in zip(starts, collectors, strict=True):
            assert collector.seqs == list(range(since + 1, final + 1))
            assert [m["type"] for m in collector.others] == ["hello"]
            await collector.stop()


async def test_device_filter_with_replay_and_live(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        gw.put("thermo-1", "t", [1.0])
        gw.put("counter-1", "n", [1])
        await gw.store.flush()
        collector = Collector(await open_stream(gw, device="therm*", since=0))
        everything = Collector(await open_stream(gw))
        gw.put("counter-1", "n", [2])
        gw.put("thermo-1", "t", [2.0])
        final = await gw.store.flush()
        await wait_until(lambda: collector.last == final and everything.last == final)
        assert collector.seqs == [1, 4]
        assert collector.devices == {"thermo-1"}
        assert everything.seqs == [3, 4]
        await collector.stop()
        await everything.stop()


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with a tiny receive window, so a client that never reads stalls fast."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_client_that_never_reads_does_not_hold_back_the_others(tmp_path: Path) -> None:
    local = local_settings(client_queue=16)
    async with (
        local_gateway(tmp_path, local=local, send_timeout=1.0) as gw,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer)
        ) as stuck_session,
    ):
        hub = gw.server.app[HUB]
        stuck = await open_stream(gw, session=stuck_session)
        readers = [Collector(await open_stream(gw)) for _ in range(10)]
        big = "x" * 2000
        chunks = 0
        # Feed in chunks and wait for the ten to catch up each time: they keep up
        # while the stuck client's socket and queue fill.
        while hub.counters.closed_slow == 0 and chunks < 100:
            gw.put("thermo-1", "blob", [big] * 200)
            last = await gw.store.flush()
            await wait_until(lambda: all(r.last == last for r in readers), timeout=30)  # noqa: B023
            chunks += 1
        # Depending on how fast its queue filled, it was also told of a gap or not; the
        # gap itself is covered by the slow-client test.
        assert hub.counters.closed_slow == 1
        final = gw.store.last_seq
        for reader in readers:
            assert reader.seqs == list(range(1, final + 1))
            assert [m["type"] for m in reader.others] == ["hello"]
        # The stuck client, reading at last, finds why it was closed.
        async for _ in stuck:
            pass
        assert stuck.close_code == 1013
        for reader in readers:
            await reader.stop()
        await wait_until(lambda: hub.counters.clients == 0)


async def test_a_slow_client_is_told_of_the_gap_and_the_stream_goes_on(tmp_path: Path) -> None:
    async with (
        local_gateway(tmp_path, local=local_settings(client_queue=4)) as gw,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer)
        ) as slow_session,
    ):
        hub = gw.server.app[HUB]
        slow = await open_stream(gw, session=slow_session)
        big = "x" * 2000
        chunks = 0
        while hub.counters.gaps == 0 and chunks < 100:
            gw.put("thermo-1", "blob", [big] * 100)
            await gw.store.flush()
            chunks += 1
        assert hub.counters.gaps == 1
        collector = Collector(slow)
        # Whatever comes before the queue has drained still falls in the gap; after the
        # gap message, readings flow again.
        await wait_until(lambda: any(m["type"] == "gap" for m in collector.others), timeout=30)
        gw.put("counter-1", "n", [1, 2, 3])
        final = await gw.store.flush()
        await wait_until(lambda: collector.last == final, timeout=30)
        assert [m["type"] for m in collector.others] == ["hello", "gap"]
        assert collector.covered == list(range(1, final + 1))
        assert hub.counters.closed_slow == 0
        await collector.stop()


async def test_ping_gets_pong_and_bad_messages_get_errors(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        ws = await open_stream(gw)
        assert (await receive_json(ws))["type"] == "hello"
        await ws.send_str('{"type": "ping"}')
        assert await receive_json(ws) == {"type": "pong"}
        for bad in ("not json", '{"type": "subscribe"}', "[1, 2]"):
            await ws.send_str(bad)
            reply = await receive_json(ws)
            assert reply["type"] == "error"
            assert reply["error"]
        await ws.send_bytes(b"\x00\x01")
        assert (await receive_json(ws))["type"] == "error"
        assert gw.server.app[HUB].counters.inbound_errors == 4
        await ws.send_str('{"type": "ping"}')
        assert await receive_json(ws) == {"type": "pong"}
        await ws.close()


async def test_oversized_inbound_message_closes_with_1009(tmp_path: Path) -> None:
    async with local_gateway(tmp_path, local=local_settings(max_inbound_bytes=1024)) as gw:
        ws = await open_stream(gw)
        assert (await receive_json(ws))["type"] == "hello"
        await ws.send_str("x" * 2048)
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1009


async def test_too_frequent_inbound_messages_close_with_1008(tmp_path: Path) -> None:
    async with local_gateway(tmp_path, local=local_settings(max_inbound_per_second=5)) as gw:
        ws = await open_stream(gw)
        assert (await receive_json(ws))["type"] == "hello"
        for _ in range(50):
            await ws.send_str('{"type": "ping"}')
        types: list[str] = []
        async for msg in ws:
            types.append(json.loads(msg.data)["type"])
        assert ws.close_code == 1008
        # Replies still queued when the limit trips may be cut by the close.
        assert len(types) <= 5
        assert set(types) <= {"pong"}


async def test_clients_beyond_the_maximum_are_refused_politely(tmp_path: Path) -> None:
    async with local_gateway(tmp_path, local=local_settings(max_clients=2)) as gw:
        first, second = await open_stream(gw), await open_stream(gw)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_stream(gw)
        assert refused_status(refused) == 503
        async with gw.session.get(gw.url(STREAM), headers=gw.auth()) as resp:
            assert resp.status == 503
            assert "retry" in (await resp.json())["error"]
        await first.close()
        hub = gw.server.app[HUB]
        await wait_until(lambda: hub.counters.clients == 1)
        third = await open_stream(gw)
        assert (await receive_json(third))["type"] == "hello"
        await second.close()
        await third.close()


async def test_server_shutdown_closes_streams_with_going_away(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        ws = await open_stream(gw)
        assert (await receive_json(ws))["type"] == "hello"
        await gw.server.close()
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1001


async def test_a_large_commit_is_split_into_bounded_messages(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        ws = await open_stream(gw)
        assert (await receive_json(ws))["type"] == "hello"
        gw.put("counter-1", "n", list(range(2500)))
        final = await gw.store.flush()
        seqs: list[int] = []
        while len(seqs) < final:
            message = await receive_json(ws)
            assert message["type"] == "readings"
            assert len(message["readings"]) <= 1000
            seqs += [r["seq"] for r in message["readings"]]
        assert seqs == list(range(1, final + 1))
        await ws.close()


async def test_a_peer_that_stops_answering_pings_is_dropped(tmp_path: Path) -> None:
    async with local_gateway(tmp_path, local=local_settings(heartbeat=0.2)) as gw:
        hub = gw.server.app[HUB]
        # autoping off: this client never answers the server's pings, like a dead peer.
        ws = await gw.session.ws_connect(gw.url(STREAM), params={"token": TOKEN}, autoping=False)
        assert (await receive_json(ws))["type"] == "hello"
        await wait_until(lambda: hub.counters.clients == 1)
        kinds: list[aiohttp.WSMsgType] = []
        while not ws.closed:
            msg = await ws.receive(timeout=10)
            kinds.append(msg.type)
            if msg.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}:
                break
        assert aiohttp.WSMsgType.PING in kinds
        await wait_until(lambda: hub.counters.clients == 0)


async def test_live_readings_overflowing_the_queue_during_a_replay_come_from_the_log(
    tmp_path: Path,
) -> None:
    prefill = 20_000
    async with local_gateway(tmp_path, local=local_settings(client_queue=2)) as gw:
        gw.put("thermo-1", "t", [float(i) for i in range(prefill)])
        await gw.store.flush()
        stop = asyncio.Event()

        async def produce() -> None:
            n = 0
            while not stop.is_set():
                gw.put("counter-1", "n", [n])
                n += 1
                await asyncio.sleep(0.001)

        producer = asyncio.create_task(produce())
        collector = Collector(await open_stream(gw, since=0))
        await wait_until(lambda: collector.last > prefill + 50, timeout=60)
        stop.set()
        await producer
        final = await gw.store.flush()
        await wait_until(lambda: collector.covered[-1:] == [final], timeout=30)
        # Every seq was sent or, past the replay, announced in a gap; the replay itself,
        # with live readings arriving faster than the two-message queue holds, has none.
        assert collector.covered == list(range(1, final + 1))
        assert collector.seqs[:prefill] == list(range(1, prefill + 1))
        await collector.stop()


async def test_compressed_stream_delivers_the_same_readings(tmp_path: Path) -> None:
    async with local_gateway(tmp_path, local=local_settings(compress=True)) as gw:
        ws = await gw.session.ws_connect(gw.url(STREAM), params={"token": TOKEN}, compress=15)
        assert ws.compress == 15
        assert (await receive_json(ws))["type"] == "hello"
        collector = Collector(ws)
        gw.put("thermo-1", "t", [float(i) for i in range(1500)])
        final = await gw.store.flush()
        await wait_until(lambda: collector.last == final)
        assert collector.seqs == list(range(1, final + 1))
        await collector.stop()


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_frame_lengths(size: int, header: bytes) -> None:
    payload = b"x" * size
    assert text_frame(payload) == header + payload


async def test_every_frame_size_reaches_the_client_intact(tmp_path: Path) -> None:
    async with local_gateway(tmp_path) as gw:
        ws = await open_stream(gw)
        assert (await receive_json(ws))["type"] == "hello"
        # One reading per commit, messages from a few bytes to several hundred KiB.
        for size in (1, 60, 200, 70_000, 400_000):
            gw.put("thermo-1", "s", ["x" * size])
            await gw.store.flush()
            message = await receive_json(ws)
            assert [len(r["value"]) for r in message["readings"]] == [size]
        await ws.close()


class _SlowSocket:
    """A client's WebSocket as ``StreamClient`` sees it, recording every message; one
    chosen send waits for the test to act while it is under way."""

    closed = False

    def __init__(self, during_send: int, act: Callable[[], Awaitable[None]]) -> None:
        self.messages: list[dict[str, Any]] = []
        self._during_send, self._act = during_send, act

    async def send_frame(self, message: bytes, _kind: object) -> None:
        self.messages.append(json.loads(message))
        if len(self.messages) == self._during_send:
            await self._act()

    def seqs(self) -> list[int]:
        return [r["seq"] for m in self.messages if m["type"] == "readings" for r in m["readings"]]


async def test_a_queue_that_overflows_while_the_replay_sends_its_last_page_is_replayed(
    store: Store,
) -> None:
    """The replay reached the live queue's first reading; then, while its last page was on
    the way, the queue overflowed and was cleared. Those readings come from the log."""
    await put(store, 10)

    async def commits_during_the_send() -> None:
        for _ in range(4):  # 12-15: one more than the queue holds, then two
            await put(store, 1)

    socket_ = _SlowSocket(during_send=2, act=commits_during_the_send)  # hello, then page 1
    request = SimpleNamespace(transport=None, remote="test")
    client = StreamClient(
        request,  # type: ignore[arg-type]
        socket_,  # type: ignore[arg-type]
        device_glob=None,
        queue_limit=2,
        counters=StreamCounters(),
        send_timeout=10.0,
    )

    def offer(batch: Sequence[StoredReading]) -> None:  # as the hub does on each commit
        for message in _messages(batch, True):
            client.offer(message)

    store.add_listener(offer)
    await put(store, 1)  # 11: queued live before the replay reads the log
    sender = asyncio.create_task(client.run(b'{"type":"hello"}', store, since=0))
    try:
        await wait_for_value(lambda: socket_.seqs()[-1:], [15], "the last reading")
    finally:
        sender.cancel()
        store.remove_listener(offer)
    assert socket_.seqs() == list(range(1, 16))
    assert [m["type"] for m in socket_.messages if m["type"] != "readings"] == ["hello"]
