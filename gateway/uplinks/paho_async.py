"""One MQTT connection, paho-mqtt driven by the asyncio event loop (no paho thread).

paho does the protocol; the event loop does the waiting. Once connected, the
socket is watched with ``loop.add_reader``/``add_writer`` (paho's socket
callbacks say when it has bytes to write), and ``loop_misc`` runs periodically
for keepalive. Only ``Client.connect`` blocks (DNS, TCP, TLS and WebSocket
handshakes): it runs on a worker thread, before any callback that touches the
loop is installed, so paho never calls into asyncio from that thread.

A ``MqttConnection`` lives for one network connection: after it is lost a new
one is opened with a fresh paho client, so nothing paho queued for the old
connection is ever re-sent behind the uplink's back.

Two promises of an MQTT 5 broker's CONNACK are kept here, whoever publishes:
its *Receive Maximum* (never more unacknowledged QoS 1 publishes on the wire; more
wait here, in order, for a PUBACK to free a slot) and its *Server Keep Alive*
(used instead of ours; 0 means no PINGREQ at all, and the kernel's TCP keepalive
then notices a dead peer instead).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import UplinkError
from gateway.retry import Failure
from gateway.uplinks.broker import BrokerAddress

# CONNACK and DISCONNECT reason codes that an operator must fix (credentials,
# authorization, client id, protocol version, a second client with our id).
REJECTING_CODES = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 0x8E})
# How long a clean close waits for the last PUBACK and the socket to close.
CLOSE_TIMEOUT = 2.0
# TCP keepalive probes before the kernel gives up on a silent peer.
TCP_KEEPALIVE_PROBES = 3


class MqttFailure(UplinkError):
    """A connection attempt failed or a connection was lost; ``kind`` picks the backoff."""

    def __init__(self, uplink: str, message: str, kind: Failure) -> None:
        self.kind = kind
        self.detail = message
        super().__init__(uplink, message)


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    address: BrokerAddress
    client_id: str
    protocol: MQTTProtocolVersion
    keepalive: int
    username: str | None
    password: str | None
    ssl_context: ssl.SSLContext | None
    tls_insecure: bool
    will_topic: str
    will_payload: bytes
    max_inflight: int
    connect_timeout: float
    # MQTT 5: the largest packet the broker may send us (None: no limit announced).
    maximum_packet_size: int | None = None


def _kind_of_code(code: int) -> Failure:
    return Failure.REJECTED if code in REJECTING_CODES else Failure.TRANSIENT


def _kind_of_error(err: BaseException) -> Failure:
    if isinstance(err, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return Failure.TRANSIENT
    if isinstance(err, ssl.SSLError | ValueError):
        # Untrusted or mismatched certificates, a refused client certificate,
        # an invalid host name: retrying soon will not change the answer.
        return Failure.REJECTED
    return Failure.TRANSIENT


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class MqttConnection:
    def __init__(
        self, name: str, client: mqtt.Client, loop: asyncio.AbstractEventLoop, keepalive: int
    ) -> None:
        self.name = name
        self.keepalive = keepalive
        self._client = client
        self._loop = loop
        self._fd = -1
        self._connack: asyncio.Future[None] = loop.create_future()
        self._lost: asyncio.Future[MqttFailure] = loop.create_future()
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        # Each pending SUBACK's callback, by message id.
        self._subscribed: dict[int, Callable[[bool], None]] = {}
        self._closing = False
        # True while paho queues a publish: see _on_register_write.
        self._publishing = False
        # From the broker's CONNACK (MQTT 5); None when it sets no limit.
        self.receive_maximum: int | None = None
        self.maximum_packet_size: int | None = None
        # Publishes beyond the broker's Receive Maximum, sent as PUBACKs free slots.
        self._held: collections.deque[_Held] = collections.deque()

    @classmethod
    async def open(
        cls, name: str, options: ConnectOptions, executor: concurrent.futures.Executor
    ) -> MqttConnection:
        """Connect and wait for a successful CONNACK; raises ``MqttFailure``."""
        loop = asyncio.get_running_loop()
        client = _new_client(options)
        connection = cls(name, client, loop, options.keepalive)
        blocking = executor.submit(connection._connect_blocking, options)
        try:
            await asyncio.wrap_future(blocking)
        except asyncio.CancelledError:
            # The worker may still be connecting: close whatever it opens.
            blocking.add_done_callback(lambda _: connection._close_socket_only())
            raise
        except (OSError, ValueError) as err:
            raise MqttFailure(
                name, f"connect failed: {_describe(err)}", _kind_of_error(err)
            ) from err
        try:
            connection._attach()
            async with asyncio.timeout(options.connect_timeout):
                waiters: list[asyncio.Future[Any]] = [connection._connack, connection._lost]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            connection.abort()
            raise MqttFailure(name, "no CONNACK from broker", Failure.TRANSIENT) from None
        except BaseException:
            connection.abort()
            raise
        if connection._lost.done():
            raise connection._lost.result()
        return connection

    def _connect_blocking(self, options: ConnectOptions) -> None:
        """Runs on a worker thread: no loop-bound callback is installed yet."""
        address = options.address
        if options.protocol == mqtt.MQTTv5:
            properties = None
            if options.maximum_packet_size is not None:
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.MaximumPacketSize = options.maximum_packet_size
            rc = self._client.connect(
                address.host,
                address.port,
                options.keepalive,
                clean_start=True,
                properties=properties,
            )
        else:
            rc = self._client.connect(address.host, address.port, options.keepalive)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._client.socket() is None:
            raise ConnectionError(mqtt.error_string(rc))

    def _attach(self) -> None:
        """On the loop: install the callbacks and watch the socket."""
        client = self._client
        sock = client.socket()
        if sock is None:
            raise ConnectionError("connection closed during connect")
        self._fd = sock.fileno()
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A command's answer follows the PUBACK of its request: with Nagle it waited
            # for the broker's delayed ACK of that PUBACK (40 ms) before leaving.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._loop.add_reader(self._fd, self._on_readable)
        if client.want_write():
            self._loop.add_writer(self._fd, self._on_writable)

    # paho callbacks, all on the event loop thread.

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._set_lost(
                f"broker refused connection: {reason} ({reason.value:#04x})",
                _kind_of_code(reason.value),
            )
            return
        self.receive_maximum = getattr(properties, "ReceiveMaximum", None)
        self.maximum_packet_size = getattr(properties, "MaximumPacketSize", None)
        # paho adopts a Server Keep Alive for its pings by itself; the housekeeping
        # interval follows it here.
        server_keepalive: int | None = getattr(properties, "ServerKeepAlive", None)
        if server_keepalive == 0 and self.keepalive > 0:
            self._tcp_keepalive(self.keepalive)
        if server_keepalive is not None:
            self.keepalive = server_keepalive
        if not self._connack.done():
            self._connack.set_result(None)

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason: ReasonCode,
        _properties: Properties,
    ) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason)
        if self._held:
            # Not from inside paho's PUBACK handling: paho frees its own slot after
            # this callback returns.
            self._loop.call_soon(self._send_held)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            message = f"broker disconnected: {reason} ({reason.value:#04x})"
            self._set_lost(message, _kind_of_code(reason.value))
        else:
            self._set_lost(f"connection lost: {reason}", Failure.TRANSIENT)

    def _on_socket_close(self, _client: mqtt.Client, _userdata: Any, _sock: object) -> None:
        self._unwatch()

    def _on_register_write(self, _client: mqtt.Client, _userdata: Any, _sock: object) -> None:
        # While publishing, ``publish`` writes the packet itself and watches for
        # writability only if the socket did not take it all.
        if self._fd >= 0 and not self._publishing:
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_unregister_write(self, _client: mqtt.Client, _userdata: Any, _sock: object) -> None:
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)

    def _on_readable(self) -> None:
        client = self._client
        rc = client.loop_read()
        # A TLS or WebSocket layer may hold decoded bytes the socket no longer signals.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and _pending(client.socket()):
            rc = client.loop_read()

    def _on_writable(self) -> None:
        self._client.loop_write()

    # The interface of the uplink.

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> asyncio.Future[ReasonCode]:
        """Publish at QoS 1; the future gets the PUBACK's reason code (Success for MQTT 3.1.1).

        If the connection is lost first, the future is cancelled. Raises
        ``ValueError`` for a topic or payload paho refuses to send; a publish held
        back by the broker's Receive Maximum gets that error in its future instead.
        """
        if self._lost.done():
            raise self._lost.result()
        future: asyncio.Future[ReasonCode] = self._loop.create_future()
        if self._held or self._window_full():
            self._held.append(_Held(topic, payload, retain, future, properties))
        else:
            self._send(topic, payload, retain, future, properties)
        return future

    def _window_full(self) -> bool:
        return self.receive_maximum is not None and len(self._acks) >= self.receive_maximum

    def _send_held(self) -> None:
        while self._held and not self._window_full() and not self._lost.done():
            held = self._held.popleft()
            try:
                self._send(held.topic, held.payload, held.retain, held.future, held.properties)
            except ValueError as err:
                held.future.set_exception(err)

    def _send(
        self,
        topic: str,
        payload: bytes,
        retain: bool,
        future: asyncio.Future[ReasonCode],
        properties: Properties | None = None,
    ) -> None:
        client = self._client
        self._publishing = True
        try:
            info = client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        finally:
            self._publishing = False
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            future.cancel()
        else:
            self._acks[info.mid] = future
        # Sending now saves a turn of the loop (and two epoll changes) per message
        # over waiting to be told the socket is writable, which it nearly always is.
        # A failed send loses the connection, which cancels the future.
        if client.want_write():
            client.loop_write()
            if client.want_write() and self._fd >= 0:
                self._loop.add_writer(self._fd, self._on_writable)

    def subscribe(
        self,
        topic: str,
        on_message: Callable[[mqtt.MQTTMessage], None],
        on_subscribed: Callable[[bool], None],
    ) -> None:
        """Subscribe to ``topic`` at QoS 1: ``on_message`` gets each message on the loop,
        ``on_subscribed`` whether the broker granted the subscription."""
        client = self._client

        def message(_client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
            on_message(msg)

        # Per topic and per SUBACK: several subscriptions share the connection.
        client.message_callback_add(topic, message)
        client.on_subscribe = self._on_subscribe
        _result, mid = client.subscribe(topic, qos=1)
        if mid is not None:
            self._subscribed[mid] = on_subscribed
        if client.want_write():
            client.loop_write()
            if client.want_write() and self._fd >= 0:
                self._loop.add_writer(self._fd, self._on_writable)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        callback = self._subscribed.pop(mid, None)
        if callback is not None:
            callback(all(not reason.is_failure for reason in reasons))

    async def run(self) -> None:
        """Keepalive housekeeping until the connection is lost; then raises ``MqttFailure``."""
        if self.keepalive == 0:
            # The broker switched keep alive off: nothing to ping, only wait.
            await asyncio.shield(self._lost)
            raise self._lost.result()
        interval = min(1.0, self.keepalive / 4)
        while not self._lost.done():
            self._client.loop_misc()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await asyncio.shield(self._lost)
        raise self._lost.result()

    async def close(self, last_will_instead: tuple[str, bytes] | None) -> None:
        """Publish ``last_will_instead`` (retained) and wait for its PUBACK, then disconnect.

        The broker handles packets in order, so that PUBACK also means every
        earlier telemetry PUBACK has been read. A normal DISCONNECT tells the
        broker not to send the will.
        """
        self._closing = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if last_will_instead is not None and not self._lost.done():
                    topic, payload = last_will_instead
                    with contextlib.suppress(asyncio.CancelledError):
                        await self.publish(topic, payload, retain=True)
                if not self._lost.done():
                    self._client.disconnect()
                    await asyncio.shield(self._lost)
        except (TimeoutError, MqttFailure):
            # Best effort: a gone or slow broker still has the will, which says
            # offline, and the log re-sends anything unacknowledged next time.
            pass
        finally:
            self.abort()

    # Internals.

    def _set_lost(self, message: str, kind: Failure) -> None:
        if self._lost.done():
            return
        if self._closing:
            message = "closed"
        self._lost.set_result(MqttFailure(self.name, message, kind))
        for future in self._acks.values():
            future.cancel()
        self._acks.clear()
        for held in self._held:
            held.future.cancel()
        self._held.clear()

    def _tcp_keepalive(self, seconds: int) -> None:
        """Let the kernel probe the peer after ``seconds`` of silence.

        Without MQTT keep alive nothing else would notice a broker that vanished
        without closing the connection (power cut, dead route), and unacknowledged
        messages would wait for ever. Works on a duplicate of the descriptor, so TLS
        and WebSocket wrappers need not expose the socket.
        """
        if self._fd < 0:
            return
        with socket.socket(fileno=os.dup(self._fd)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds)
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, seconds // TCP_KEEPALIVE_PROBES)
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TCP_KEEPALIVE_PROBES)

    def _unwatch(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = -1

    def abort(self) -> None:
        """On the loop: drop the connection without a DISCONNECT (the broker sends the will)."""
        self._unwatch()
        self._close_socket_only()
        self._set_lost("closed", Failure.TRANSIENT)

    def _close_socket_only(self) -> None:
        """Safe from any thread: touches neither the loop nor paho's state."""
        sock = self._client.socket()
        if sock is not None:
            sock.close()


@dataclass(frozen=True, slots=True)
class _Held:
    topic: str
    payload: bytes
    retain: bool
    future: asyncio.Future[ReasonCode]
    properties: Properties | None = None


def _pending(sock: object) -> bool:
    pending = getattr(sock, "pending", None)
    return pending is not None and pending() > 0


def _new_client(options: ConnectOptions) -> mqtt.Client:
    address = options.address
    v5 = options.protocol == mqtt.MQTTv5
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=options.client_id,
        # MQTT 3.1.1 takes the clean flag here; MQTT 5 takes clean_start at connect.
        clean_session=None if v5 else True,
        protocol=options.protocol,
        transport=address.transport,
        reconnect_on_failure=False,
    )
    client.connect_timeout = options.connect_timeout
    client.max_inflight_messages_set(options.max_inflight)
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.ssl_context is not None:
        client.tls_set_context(options.ssl_context)
        if options.tls_insecure:
            client.tls_insecure_set(True)
    if address.transport == "websockets":
        client.ws_set_options(path=address.path)
    client.will_set(options.will_topic, options.will_payload, qos=1, retain=True)
    return client
