"""Logging a device's faults without flooding: the first of a run, then a count.

A port or pin that stays unavailable for a day is retried tens of thousands of times;
its log shows the first failure and, once it opens or fails differently, how many
times that failure repeated. After the device opens, the same failure is news again.
"""

from __future__ import annotations

import logging


class FaultLog:
    def __init__(self, device: str, logger: logging.Logger) -> None:
        self._device = device
        self._log = logger
        self._last: str | None = None
        self._repeats = 0

    def report(self, level: int, message: str) -> None:
        if message == self._last:
            self._repeats += 1
            return
        self._summarise()
        self._last = message
        self._log.log(level, "%s: %s", self._device, message)

    def clear(self) -> None:
        """The device opened: the run of failures is over."""
        self._summarise()
        self._last = None

    def _summarise(self) -> None:
        if self._repeats:
            self._log.info("%s: last message repeated %d more times", self._device, self._repeats)
            self._repeats = 0
