"""A WebSocket peer that acknowledges every batch on receipt, storing nothing.

The measuring instrument for the WebSocket uplink's own throughput, as the MQTT
benchmark's mosquitto (persistence off, no subscriber) is for the MQTT uplink: it
answers the hello and acks each batch by its ``last_seq``, read from the batch's
head without decoding its readings. Like mosquitto it is lean: a plain asyncio
protocol that unmasks only a frame's first bytes (RFC 6455), and inflates when
permessage-deflate is on (RFC 7692, as the uplink negotiates it). Not a server to
deploy: nothing is stored, nothing checked.

    python -m benchmarks.ws_ack_peer --port P
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import struct
import zlib

from gateway.uplinks.ws_protocol import SUBPROTOCOL, ack, welcome

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = re.compile(rb"\r\nsec-websocket-key:\s*(\S+)", re.IGNORECASE)
_DEFLATE = re.compile(rb"\r\nsec-websocket-extensions:[^\r]*permessage-deflate", re.IGNORECASE)
_LAST_SEQ = re.compile(rb'"last_seq":(\d+)')
_HEAD = 256  # the gateway writes the head first: last_seq is within these bytes
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def _unmask(data: bytes | bytearray, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _frame(opcode: int, payload: bytes) -> bytes:
    """A server frame: unmasked, unfragmented, uncompressed."""
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", 0x80 | opcode, size) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


class AckPeer(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.inflate: zlib._Decompress | None = None
        self.welcomed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            self._upgrade()
        while self.upgraded and self._frame():
            pass

    def _upgrade(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[: end + 2])
        del self.buffer[: end + 4]
        key = _KEY.search(head)
        assert key is not None
        assert self.transport is not None
        accept = base64.b64encode(hashlib.sha1(key[1] + _GUID).digest())
        lines = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + accept,
            b"Sec-WebSocket-Protocol: " + SUBPROTOCOL.encode(),
        ]
        if _DEFLATE.search(head):
            lines.append(b"Sec-WebSocket-Extensions: permessage-deflate")
            self.inflate = zlib.decompressobj(-15)
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
        self.upgraded = True

    def _frame(self) -> bool:
        """Handle one whole frame from the buffer; False until one is there."""
        buf = self.buffer
        if len(buf) < 2:
            return False
        size, offset = buf[1] & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return False
            (size,) = struct.unpack_from("!H", buf, 2)
            offset = 4
        elif size == 127:
            if len(buf) < 10:
                return False
            (size,) = struct.unpack_from("!Q", buf, 2)
            offset = 10
        if len(buf) < offset + 4 + size:
            return False
        opcode, compressed = buf[0] & 0x0F, bool(buf[0] & 0x40)
        mask = bytes(buf[offset : offset + 4])
        start = offset + 4
        if compressed and self.inflate is not None:
            payload = _unmask(buf[start : start + size], mask)
            text = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
        else:
            text = _unmask(buf[start : start + min(size, _HEAD)], mask)
        del buf[: start + size]
        self._message(opcode, text)
        return True

    def _message(self, opcode: int, text: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if opcode == _PING:
            transport.write(_frame(_PONG, text))
        elif opcode == _CLOSE:
            transport.write(_frame(_CLOSE, b""))
            transport.close()
        elif opcode == _TEXT and not self.welcomed:
            self.welcomed = True  # the hello
            transport.write(_frame(_TEXT, welcome(64 << 20, 64).encode()))
        elif opcode == _TEXT:
            found = _LAST_SEQ.search(text, 0, _HEAD)
            if found is not None:
                transport.write(_frame(_TEXT, ack(int(found[1])).encode()))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(AckPeer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
