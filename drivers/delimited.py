"""Cutting a byte stream into records at a delimiter, with a hard bound on what is held.

What the codecs of delimited records share (NMEA sentences end at a line end, COBS and
SLIP frames at their delimiter byte). ``Splitter.feed`` returns, in stream order, each
completed record and each record that outgrew the bound; such a record's first
``limit`` bytes are returned once and the rest of it, up to the next delimiter, is
discarded. Between feeds at most ``limit`` bytes are held, whatever arrives.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Record:
    data: bytes
    # False: ``data`` is the first ``limit`` bytes of a longer record.
    complete: bool = True


class Splitter:
    def __init__(self, delimiter: bytes, limit: int) -> None:
        if len(delimiter) != 1:
            raise ValueError("the delimiter is one byte")
        if limit < 1:
            raise ValueError("the bound must be at least 1 byte")
        self.delimiter = delimiter
        self.limit = limit
        self._tail = b""
        # True after an overlong record until its end is seen.
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished record held between feeds (never above ``limit``)."""
        return len(self._tail)

    def feed(self, data: bytes) -> list[Record]:
        """The records ``data`` completes (empty ones left out) and the overlong ones."""
        delimiter, limit = self.delimiter, self.limit
        if self._discarding:
            end = data.find(delimiter)
            if end < 0:
                return []
            self._discarding = False
            data = data[end + 1 :]
        parts = (self._tail + data).split(delimiter)
        tail = parts.pop()
        out = [
            Record(part) if len(part) <= limit else Record(part[:limit], complete=False)
            for part in parts
            if part
        ]
        if len(tail) > limit:
            out.append(Record(tail[:limit], complete=False))
            tail = b""
            self._discarding = True
        self._tail = tail
        return out

    def reset(self) -> bytes:
        """Forget the unfinished record (the port closed) and return it."""
        tail, self._tail = self._tail, b""
        self._discarding = False
        return tail
