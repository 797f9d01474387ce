"""The stream's hand-built bytes, read back by aiohttp's own client-side frame reader.

The live stream frames each message itself (``text_frame``) and writes those bytes
straight to clients' sockets, and builds its ``readings`` messages by joining stored
JSON (``readings_message``). Here both go through the WebSocket reader that an aiohttp
client runs on what it receives, so that a change on either side (our framing, or what
aiohttp accepts) fails a test rather than clients in the field. Both of aiohttp's reader
implementations are checked: the compiled one that clients use by default, and the pure
Python one they fall back to where it is not built.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
from collections.abc import Sequence
from types import ModuleType

import pytest
from aiohttp import WebSocketError, WSMessage, WSMsgType
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import EofStream
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.local.stream import MESSAGE_READINGS, readings_message, text_frame
from gateway.reading import Sample, StoredReading, encode

# What aiohttp's ws_connect uses unless told otherwise.
CLIENT_MAX_MSG_SIZE = 4 * 1024 * 1024
# The reader's queue pauses parsing above this much unread data; these tests read
# everything at the end, so the bound is set above any input they feed.
QUEUE_LIMIT = 64 * 1024 * 1024

READERS = ["aiohttp._websocket.reader", "aiohttp._websocket.reader_py"]

# The edges of the three payload length encodings (RFC 6455, 5.2): 7 bits up to 125,
# 16 bits up to 65,535, 64 bits beyond.
LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20]


@pytest.fixture(params=READERS)
def reader_module(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


def decode(module: ModuleType, data: bytes, cuts: Sequence[int] = ()) -> list[WSMessage]:
    """Every message aiohttp's reader finds in ``data``, fed in pieces split at ``cuts``."""

    async def run() -> list[WSMessage]:
        loop = asyncio.get_running_loop()
        queue = module.WebSocketDataQueue(BaseProtocol(loop), QUEUE_LIMIT, loop=loop)
        reader = module.WebSocketReader(
            queue, CLIENT_MAX_MSG_SIZE, compress=False, decode_text=True
        )
        bounds = [0, *sorted(set(cuts)), len(data)]
        for start, end in itertools.pairwise(bounds):
            reader.feed_data(data[start:end])
        # An end of input would also clear an error the reader has queued for read().
        if queue.exception() is None:
            reader.feed_eof()
        messages = []
        while True:
            try:
                messages.append(await queue.read())
            except EofStream:
                return messages

    return asyncio.run(run())


def text_of_length(size: int) -> bytes:
    """``size`` bytes of UTF-8 with multi-byte characters in it, none cut in half."""
    text = "é€𝄞x" * (size // 10) + "x" * (size % 10)
    return text.encode()


def stored(seq: int, device: str, value: float | str) -> StoredReading:
    sample = Sample(device, "t", value, 1764086400.0 + seq / 1000, unit="°C")
    return StoredReading(seq, device, encode(seq, sample))


def test_the_payloads_have_the_lengths_they_claim() -> None:
    assert [len(text_of_length(n)) for n in LENGTHS] == LENGTHS


@pytest.mark.parametrize("size", LENGTHS)
def test_a_text_frame_of_each_length_class_reads_as_one_text_message(
    reader_module: ModuleType, size: int
) -> None:
    payload = text_of_length(size)
    (message,) = decode(reader_module, text_frame(payload))
    assert message.type is WSMsgType.TEXT
    assert message.data == payload.decode()


@pytest.mark.parametrize("readings", [1, 2, 100, MESSAGE_READINGS])
def test_a_readings_message_reads_as_the_readings_it_was_built_from(
    reader_module: ModuleType, readings: int
) -> None:
    batch = [stored(seq, "thermo-1", 20.0 + seq / 10) for seq in range(1, readings + 1)]
    (message,) = decode(reader_module, text_frame(readings_message(batch)))
    assert message.type is WSMsgType.TEXT
    assert message.json() == {
        "type": "readings",
        "readings": [json.loads(r.payload) for r in batch],
    }


def test_the_largest_message_stays_in_the_longest_length_class(
    reader_module: ModuleType,
) -> None:
    # A full message of long readings is several hundred KiB: 64-bit length, still
    # under the client's default limit.
    batch = [stored(seq, "d" * 64, "v" * 200) for seq in range(1, MESSAGE_READINGS + 1)]
    frame = text_frame(readings_message(batch))
    assert frame[1] == 127
    (message,) = decode(reader_module, frame)
    assert [r["seq"] for r in message.json()["readings"]] == list(range(1, 1001))


def test_frames_back_to_back_split_at_every_byte_read_in_order(
    reader_module: ModuleType,
) -> None:
    payloads = [text_of_length(n) for n in (0, 3, 125, 126, 300)]
    stream = b"".join(text_frame(p) for p in payloads)
    for cut in range(len(stream) + 1):
        messages = decode(reader_module, stream, [cut])
        assert [m.data for m in messages] == [p.decode() for p in payloads], cut


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.sampled_from(LENGTHS[:-1]), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=400_000), max_size=20),
    module=st.sampled_from(READERS),
)
def test_any_split_of_a_run_of_frames_reads_back_every_message(
    sizes: list[int], cuts: list[int], module: str
) -> None:
    payloads = [text_of_length(n) for n in sizes]
    stream = b"".join(text_frame(p) for p in payloads)
    messages = decode(
        importlib.import_module(module), stream, [c % (len(stream) + 1) for c in cuts]
    )
    assert [(m.type, m.data) for m in messages] == [(WSMsgType.TEXT, p.decode()) for p in payloads]


@settings(max_examples=100, deadline=None)
@given(
    readings=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=64),
            st.one_of(
                st.floats(allow_nan=False, allow_infinity=False),
                st.integers(min_value=-(2**53), max_value=2**53).map(float),
                st.text(max_size=80),
            ),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_readings_with_any_names_and_values_read_back_as_json(
    readings: list[tuple[str, float | str]],
) -> None:
    batch = [stored(seq, device, value) for seq, (device, value) in enumerate(readings, 1)]
    (message,) = decode(importlib.import_module(READERS[0]), text_frame(readings_message(batch)))
    received = message.json()["readings"]
    assert [(r["seq"], r["device"], r["value"]) for r in received] == [
        (seq, device, value) for seq, (device, value) in enumerate(readings, 1)
    ]


def test_the_reader_would_catch_a_broken_frame(reader_module: ModuleType) -> None:
    # The check above has teeth: a frame whose text is not UTF-8 is refused, and one
    # that claims more bytes than it carries yields no message at all.
    with pytest.raises(WebSocketError):
        decode(reader_module, text_frame(b"\xff\xfe"))
    assert decode(reader_module, text_frame(text_of_length(200))[:-1]) == []
