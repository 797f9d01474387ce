"""The MQTT uplink against mosquitto with TLS (mutual), passwords and ACLs, and over WebSocket."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gateway.store import Store
from gateway.uplinks import MqttUplink
from tests.support.common import wait_until
from tests.support.mosquitto import (
    Mosquitto,
    MqttSubscriber,
    TlsFiles,
    make_tls_files,
    write_password_file,
)
from tests.support.mqtt_uplink import (
    GATEWAY,
    assert_complete_and_ordered,
    put,
    running,
    settings_for,
    stored_payloads,
)


async def stays_down(uplink: MqttUplink, failures: int = 2) -> None:
    """The uplink keeps failing to connect, and keeps running."""
    await wait_until(lambda: uplink.status.errors >= failures, message="repeated failures")
    assert uplink.status.state in {"connecting", "backoff"}
    assert uplink.status.connected_since is None
    assert uplink.status.acked_seq == 0


async def test_mutual_tls_delivers(
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
    tls_files: TlsFiles,
    store: Store,
) -> None:
    broker = mosquitto_factory(tls=tls_files)
    subscriber = subscriber_factory(broker)
    last = await put(store, 100, ("a", "b"))
    settings = settings_for(
        broker.url,
        ca_file=tls_files.ca,
        cert_file=tls_files.client_cert,
        key_file=tls_files.client_key,
    )
    uplink = MqttUplink(settings, GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == last, message="acked over TLS")
        await wait_until(lambda: len(subscriber.seqs()) == 100, message="all readings")
    assert broker.url.startswith("mqtts://")
    assert_complete_and_ordered(subscriber, await stored_payloads(store), {"a", "b"})


async def test_unknown_ca_is_refused_without_crashing(
    mosquitto_factory: Callable[..., Mosquitto], tls_files: TlsFiles, store: Store
) -> None:
    broker = mosquitto_factory(tls=tls_files)
    await put(store, 10)
    settings = settings_for(
        broker.url,
        ca_file=tls_files.other_ca,
        cert_file=tls_files.client_cert,
        key_file=tls_files.client_key,
    )
    uplink = MqttUplink(settings, GATEWAY, store)
    async with running(uplink) as task:
        await stays_down(uplink)
        assert "CERTIFICATE_VERIFY_FAILED" in (uplink.status.last_error or "")
        assert not task.done()


async def test_certificate_for_another_host_is_refused_unless_insecure(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path, store: Store
) -> None:
    files = make_tls_files(tmp_path / "other-host", server_names=("broker.example",))
    broker = mosquitto_factory(tls=files)
    last = await put(store, 10)
    settings = settings_for(
        broker.url, ca_file=files.ca, cert_file=files.client_cert, key_file=files.client_key
    )
    uplink = MqttUplink(settings, GATEWAY, store)
    async with running(uplink):
        await stays_down(uplink)
        assert "127.0.0.1" in (uplink.status.last_error or "")
    # tls_insecure skips the host name check only; the CA is still verified.
    untrusted = replace(settings, tls_insecure=True, ca_file=files.other_ca)
    still_refused = MqttUplink(untrusted, GATEWAY, store)
    async with running(still_refused):
        await stays_down(still_refused)
        assert "CERTIFICATE_VERIFY_FAILED" in (still_refused.status.last_error or "")
    insecure = MqttUplink(replace(settings, tls_insecure=True), GATEWAY, store)
    async with running(insecure):
        await wait_until(lambda: insecure.status.acked_seq == last, message="acked, insecure")


async def test_missing_client_certificate_is_refused(
    mosquitto_factory: Callable[..., Mosquitto], tls_files: TlsFiles, store: Store
) -> None:
    broker = mosquitto_factory(tls=tls_files)
    await put(store, 10)
    uplink = MqttUplink(settings_for(broker.url, ca_file=tls_files.ca), GATEWAY, store)
    async with running(uplink):
        await stays_down(uplink)


async def test_password_from_file_and_wrong_password(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path, store: Store
) -> None:
    passwords = write_password_file(tmp_path / "passwd", {"gw": "s3cret"})
    broker = mosquitto_factory(password_file=passwords)
    last = await put(store, 10)
    wrong = MqttUplink(
        settings_for(broker.url, username="gw", password="nope"), GATEWAY, store, name="wrong"
    )
    async with running(wrong):
        await stays_down(wrong)
        assert "Not authorized" in (wrong.status.last_error or "")
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    right = MqttUplink(
        settings_for(broker.url, username="gw", password_file=secret), GATEWAY, store
    )
    async with running(right):
        await wait_until(lambda: right.status.acked_seq == last, message="acked with password")


async def test_denied_readings_are_not_acknowledged_until_the_acl_allows_them(
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
    tmp_path: Path,
    store: Store,
) -> None:
    passwords = write_password_file(tmp_path / "passwd", {"gw": "pw", "reader": "pw"})
    acl = tmp_path / "acl"
    acl.write_text(
        "user reader\ntopic read #\n"
        f"user gw\ntopic write edge/{GATEWAY}/status\ntopic write edge/{GATEWAY}/open/#\n"
    )
    broker = mosquitto_factory(password_file=passwords, acl_file=acl)
    subscriber = subscriber_factory(broker, username="reader", password="pw")
    open_last = await put(store, 20, ("open",))
    last = await put(store, 20, ("closed",))
    settings = settings_for(broker.url, username="gw", password="pw", reconnect_max=0.3)
    uplink = MqttUplink(settings, GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == open_last, message="allowed acked")
        # The broker answers PUBACK 0x87 for the closed device (and mosquitto
        # then drops the connection): those readings are never counted as sent.
        await wait_until(lambda: uplink.status.errors >= 4, message="refusals retried")
        assert "Not authorized (0x87)" in (uplink.status.last_error or "")
        assert uplink.status.acked_seq == open_last
        assert store.stats().depth == last - open_last
        assert uplink.status.published_readings >= open_last
        # The operator fixes the ACL; the retried messages then go through.
        acl.write_text(f"user reader\ntopic read #\nuser gw\ntopic write edge/{GATEWAY}/#\n")
        broker.reload()
        await wait_until(lambda: uplink.status.acked_seq == last, message="acked after reload")
        await wait_until(lambda: len(subscriber.seqs()) == last, message="all readings")
    assert uplink.status.refused == 0
    assert_complete_and_ordered(subscriber, await stored_payloads(store), {"open", "closed"})


async def test_a_denied_status_topic_is_reported_and_keeps_the_readings(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path, store: Store
) -> None:
    passwords = write_password_file(tmp_path / "passwd", {"gw": "pw"})
    acl = tmp_path / "acl"
    acl.write_text(f"user gw\ntopic write edge/{GATEWAY}/+/telemetry\n")
    broker = mosquitto_factory(password_file=passwords, acl_file=acl)
    last = await put(store, 10)
    settings = settings_for(broker.url, username="gw", password="pw", reconnect_max=0.3)
    uplink = MqttUplink(settings, GATEWAY, store)
    async with running(uplink):
        await wait_until(
            lambda: f"edge/{GATEWAY}/status: Not authorized" in (uplink.status.last_error or ""),
            message="status refusal reported",
        )
        acl.write_text(f"user gw\ntopic write edge/{GATEWAY}/#\n")
        broker.reload()
        await wait_until(lambda: uplink.status.acked_seq == last, message="acked after reload")


async def test_websocket_transport_delivers(
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., MqttSubscriber],
    store: Store,
) -> None:
    broker = mosquitto_factory(websockets=True)
    subscriber = subscriber_factory(broker)
    last = await put(store, 50, ("a", "b"))
    uplink = MqttUplink(settings_for(broker.ws_url), GATEWAY, store)
    async with running(uplink):
        await wait_until(lambda: uplink.status.acked_seq == last, message="acked over WebSocket")
        await wait_until(lambda: len(subscriber.seqs()) == 50, message="all readings")
    assert broker.ws_url.startswith("ws://")
    assert_complete_and_ordered(subscriber, await stored_payloads(store), {"a", "b"})
