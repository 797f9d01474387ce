"""One owner per serial port: the devices of one RS-485 bus share it, one request at a time.

Modbus RTU is half duplex with one master: a request and its answer must not overlap
another's. Every ``modbus_rtu`` device naming the same ``port`` attaches to the same
``Bus`` (``shared_bus``); the first to attach creates it, the last to leave closes
the port. Each request holds the bus's lock from send to answer or timeout, and the
lock is fair (first come, first served), so devices take turns and a silent slave
holds the bus for at most its own ``timeout`` per request. Between the last byte heard
and the next request the owner keeps the line silent for the interval the Modbus spec
sets for the baud rate (``codec.silent_interval``): a slave takes a shorter gap for the
middle of the frame it just sent and drops the request.

The owners live in this module for the life of the process; the gateway's core
knows nothing of them (it creates one driver per device, as for any driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.modbus_rtu.codec import Block, crc_ok, silent_interval
from drivers.modbus_rtu.settings import ModbusRtuSettings, Register

log = logging.getLogger("drivers.modbus_rtu")

# pymodbus's own wait is left long: each request is bounded by its device's `timeout`.
_CLIENT_TIMEOUT = 60.0
# How late the event loop's timers may wake (epoll's resolution is a millisecond).
_TIMER_SLACK = 0.001


class Failure(Exception):
    """A request that got no usable answer. ``kind``: "timeout" (nothing heard), "crc
    error" (bytes heard that do not end in their CRC: noise, a corrupted or cut frame),
    "bad frame" (a frame with a good CRC but no answer to the request: another slave's,
    the wrong size), "exception" (the slave answered with a Modbus exception, ``code``)
    or "port" (the port cannot be used)."""

    def __init__(self, kind: str, detail: str, raw: bytes = b"", code: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.raw = raw
        self.code = code


class BusConflict(Exception):
    """A device names a port already open with other serial settings."""


@dataclass(frozen=True, slots=True)
class Line:
    """The serial settings of a bus: every device on it must agree."""

    port: str
    baudrate: int
    bytesize: int
    parity: str
    stopbits: float

    @classmethod
    def of(cls, s: ModbusRtuSettings) -> Line:
        return cls(s.port, s.baudrate, s.bytesize, s.parity, s.stopbits)


class Bus:
    """The port of one bus and the lock that serialises its requests."""

    def __init__(self, line: Line, owner: str) -> None:
        self.line = line
        self.owner = owner  # the device that opened it, for messages
        self.users = 0
        self.requests = 0
        # The silence kept between the end of an answer and the next request.
        self.silence = silent_interval(line.baudrate)
        self._lock = asyncio.Lock()
        self._client: AsyncModbusSerialClient | None = None
        # What the port last handed the framer during the current request, and when
        # (time.monotonic, the event loop's clock): the line is busy until then.
        self._heard = b""
        self._heard_at = 0.0

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._heard = data
            self._heard_at = time.monotonic()
        return data

    async def _keep_silence(self) -> None:
        """Wait until the line has been silent for ``silence`` since the last byte heard.

        The event loop's timers wake up to a millisecond late (epoll counts whole
        milliseconds), which at 115,200 baud is a tenth of a poll; so the last
        millisecond is waited by yielding to the loop instead. That only happens when
        the next request is due at once (a busy bus); other tasks run meanwhile.
        """
        until = self._heard_at + self.silence
        if until - time.monotonic() > _TIMER_SLACK:
            await asyncio.sleep(until - time.monotonic() - _TIMER_SLACK)
        while time.monotonic() < until:  # noqa: ASYNC110 - a spin of under a millisecond
            await asyncio.sleep(0)

    async def _connected(self) -> AsyncModbusSerialClient:
        client = self._client
        if client is not None and client.connected:
            return client
        if client is not None:
            client.close()
        line = self.line
        client = AsyncModbusSerialClient(
            line.port,
            framer=FramerType.RTU,
            baudrate=line.baudrate,
            bytesize=line.bytesize,
            parity=line.parity,
            stopbits=int(line.stopbits),
            timeout=_CLIENT_TIMEOUT,
            retries=0,
            # No reconnect loop inside pymodbus: the next request opens the port again.
            reconnect_delay=0,
            trace_packet=self._trace,
        )
        self._client = client
        if not await client.connect():
            raise Failure("port", f"cannot open {line.port}")
        log.info("bus %s open", line.port)
        return client

    async def _call(
        self,
        answer_within: float,
        request: Callable[[AsyncModbusSerialClient], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        try:
            return await self._locked_call(answer_within, request)
        finally:
            # pymodbus waits with asyncio.wait_for, which on Python 3.11 can return an
            # answer that arrived together with a cancellation and drop the cancellation;
            # a driver being stopped must stop, not poll on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError

    async def _locked_call(
        self,
        answer_within: float,
        request: Callable[[AsyncModbusSerialClient], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        async with self._lock:
            client = await self._connected()
            await self._keep_silence()
            self._heard = b""
            self.requests += 1
            try:
                async with asyncio.timeout(answer_within):
                    response = await request(client)
            except TimeoutError:
                heard = self._heard
                if heard and not crc_ok(heard):
                    raise Failure("crc error", f"{len(heard)} bytes heard", heard) from None
                if heard:
                    raise Failure("bad frame", "no answer to the request", heard) from None
                raise Failure("timeout", f"no answer within {answer_within:g}s") from None
            except ConnectionException as exc:
                self.close()
                raise Failure("port", str(exc)) from None
            except ModbusException as exc:
                raise Failure("bad frame", str(exc), self._heard) from None
            if response.isError():
                code = response.exception_code
                raise Failure("exception", f"exception code {code} ({_meaning(code)})", code=code)
            return response

    async def read(self, slave: int, block: Block, answer_within: float) -> list[int]:
        """The block's words, or its bits as 0 and 1."""

        def send(client: AsyncModbusSerialClient) -> Awaitable[ModbusPDU]:
            read = {
                "holding": client.read_holding_registers,
                "input": client.read_input_registers,
                "coil": client.read_coils,
                "discrete": client.read_discrete_inputs,
            }[block.table]
            return read(block.address, count=block.count, device_id=slave)

        response = await self._call(answer_within, send)
        if block.table in ("coil", "discrete"):
            values = [int(bit) for bit in response.bits[: block.count]]
        else:
            values = list(response.registers)
        if len(values) != block.count:
            raise Failure("bad frame", f"{len(values)} values for {block.count}")
        return values

    async def write(
        self, slave: int, register: Register, words: Sequence[int], answer_within: float
    ) -> None:
        """Write ``words`` (a coil's one bit) and check that the answer confirms it."""

        def send(client: AsyncModbusSerialClient) -> Awaitable[ModbusPDU]:
            if register.table == "coil":
                return client.write_coil(register.address, bool(words[0]), device_id=slave)
            if len(words) == 1:
                return client.write_register(register.address, words[0], device_id=slave)
            return client.write_registers(register.address, list(words), device_id=slave)

        response = await self._call(answer_within, send)
        if response.address != register.address:
            raise Failure(
                "bad frame", f"write of {register.address} answered for {response.address}"
            )

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


# The exception codes of the Modbus application protocol, named as the spec names them.
_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    5: "acknowledge",
    6: "slave device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def _meaning(code: int) -> str:
    return _EXCEPTIONS.get(code, "not a standard code")


_buses: dict[str, Bus] = {}


@contextlib.asynccontextmanager
async def shared_bus(settings: ModbusRtuSettings) -> AsyncIterator[Bus]:
    """The bus of ``settings.port``, created by its first device, closed by its last."""
    line = Line.of(settings)
    bus = _buses.get(line.port)
    if bus is None:
        bus = _buses[line.port] = Bus(line, settings.id)
    elif bus.line != line:
        raise BusConflict(
            f"{line.port} is already open by {bus.owner} with other serial settings "
            f"({bus.line.baudrate} baud, {bus.line.bytesize}{bus.line.parity}"
            f"{bus.line.stopbits:g}); every device of a bus must use the same"
        )
    bus.users += 1
    try:
        yield bus
    finally:
        bus.users -= 1
        if not bus.users:
            del _buses[line.port]
            bus.close()
