"""The uplink at low rates: live readings from the listener, linger, coalesced cursor writes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.interfaces import CommitListener, StoreStats
from gateway.reading import StoredReading
from gateway.store import Store
from gateway.uplinks import MqttUplink
from tests.support.common import wait_for_value, wait_until
from tests.support.mosquitto import Mosquitto, MqttSubscriber
from tests.support.mqtt_uplink import GATEWAY, put, running, settings_for


class CountingLog:
    """The real store, counting the reads of the log and the cursor writes asked of it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0
        self.acks: list[int] = []

    @property
    def last_seq(self) -> int:
        return self.store.last_seq

    @property
    def paced(self) -> bool:
        return self.store.paced

    def set_watched(self, spacing: float | None) -> None:
        self.store.set_watched(spacing)

    def add_listener(self, listener: CommitListener) -> None:
        self.store.add_listener(listener)

    def stats(self) -> StoreStats:
        return self.store.stats()

    def remove_listener(self, listener: CommitListener) -> None:
        self.store.remove_listener(listener)

    async def wait_beyond(self, seq: int) -> int:
        return await self.store.wait_beyond(seq)

    async def read_after(
        self, seq: int, limit: int, device_glob: str | None = None
    ) -> list[StoredReading]:
        self.reads += 1
        return await self.store.read_after(seq, limit, device_glob)

    async def register_consumer(
        self, name: str, *, start_now: bool = False, start_at: int = 0, best_effort: bool = False
    ) -> int:
        return await self.store.register_consumer(
            name, start_now=start_now, start_at=start_at, best_effort=best_effort
        )

    async def read_devices_after(
        self, seq: int, limit: int, devices: Sequence[str]
    ) -> list[StoredReading]:
        self.reads += 1
        return await self.store.read_devices_after(seq, limit, devices)

    async def oldest_seq(self) -> int | None:
        return await self.store.oldest_seq()

    async def ack(self, name: str, seq: int) -> None:
        self.acks.append(seq)
        await self.store.ack(name, seq)


async def test_caught_up_uplink_sends_live_readings_without_reading_the_log(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    log = CountingLog(store)
    uplink = MqttUplink(settings_for(mosquitto.url, linger=0.0), GATEWAY, log)
    async with running(uplink):
        await wait_until(lambda: uplink.status.state == "connected", message="connected")
        for round_ in range(1, 6):
            await put(store, 3, ("a", "b"))
            await wait_for_value(
                lambda: uplink.status.published_readings, 3 * round_, "live readings published"
            )
    assert log.reads == 0
    await wait_until(lambda: subscriber.seqs() == set(range(1, 16)), message="all received")


async def test_a_backlog_is_read_from_the_log_then_live_readings_follow(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    # More than the tail keeps: the uplink must read these from the log.
    backlog = await put(store, 2500)
    log = CountingLog(store)
    uplink = MqttUplink(settings_for(mosquitto.url, batch_max=100), GATEWAY, log)
    async with running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == backlog, message="backlog sent")
        reads = log.reads
        assert reads > 0
        last = 0
        for _ in range(5):
            last = await put(store, 4, ("a", "b"))
        await wait_until(lambda: uplink.status.published_readings == last, message="live sent")
        # Caught up: the live readings came from the commit listener.
        assert log.reads == reads
    await wait_until(lambda: subscriber.seqs() == set(range(1, last + 1)), message="all received")


async def test_cursor_is_written_at_most_once_per_interval_and_on_stop(
    mosquitto: Mosquitto, store: Store
) -> None:
    log = CountingLog(store)
    uplink = MqttUplink(settings_for(mosquitto.url, ack_interval=3600.0), GATEWAY, log)
    async with running(uplink):
        await wait_until(lambda: uplink.status.state == "connected", message="connected")
        first = await put(store, 2)
        await wait_until(lambda: uplink.status.acked_seq == first, message="first ack at once")
        last = first
        for _ in range(5):
            last = await put(store, 2)
            await wait_for_value(lambda: uplink.status.published_readings, last, "published")
        # Acknowledged by the broker, but the durable cursor waits for the interval.
        assert log.acks == [first]
        assert uplink.status.acked_seq == first
        assert await store.register_consumer("mqtt") == first
    # A clean stop writes where the uplink got to.
    assert log.acks[-1] == last
    assert uplink.status.acked_seq == last
    assert await store.register_consumer("mqtt") == last


async def test_while_live_clients_watch_linger_gathers_commits_into_one_message(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    uplink = MqttUplink(settings_for(mosquitto.url, linger=1.0), GATEWAY, store)
    # Someone watches the live stream: commits come reading by reading, unpaced.
    store.set_watched(0.0)
    commits = 5
    async with running(uplink):
        await wait_until(lambda: uplink.status.state == "connected", message="connected")
        last = 0
        for _ in range(commits):
            last = await put(store, 2)
        await wait_until(lambda: uplink.status.acked_seq == last, message="all acked")
    await wait_until(lambda: len(subscriber.seqs()) == last, message="all received")
    assert len(subscriber.telemetry()) < commits


async def test_paced_commits_are_sent_as_they_come_without_linger(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., MqttSubscriber], store: Store
) -> None:
    subscriber = subscriber_factory(mosquitto)
    # A linger this long would hold every message for a minute if it applied.
    uplink = MqttUplink(settings_for(mosquitto.url, linger=60.0), GATEWAY, store)
    assert store.paced
    async with running(uplink):
        await wait_until(lambda: uplink.status.state == "connected", message="connected")
        for _ in range(3):
            last = await put(store, 2)
            await wait_for_value(lambda: uplink.status.published_readings, last, "published")
    await wait_until(lambda: len(subscriber.seqs()) == last, message="all received")
