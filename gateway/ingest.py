"""Every device's way into the store, whatever its driver: sensor names are checked here.

A device chooses its sensor names (the keys of a ``kv`` or ``json`` line, say). A name
that breaks the rule of ``gateway.reading.SensorNames``, or a new one beyond the
per-device bound, does not become a reading: it becomes a dead letter with the reason
and is counted, so a device inventing keys cannot grow memory (the latest-value table,
the dashboard) without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.interfaces import DeviceStatus, SampleSink
from gateway.reading import DeadLetter, Sample, SensorNames

log = logging.getLogger(__name__)

# Raw bytes kept of a refused sample ("name=value").
MAX_RAW = 256


class DeviceSink:
    """A ``SampleSink`` for one device, in front of the store."""

    def __init__(self, sink: SampleSink, device: str) -> None:
        self._sink = sink
        self._device = device
        self._names = SensorNames()
        self._logged: set[str] = set()
        # The driver's status, once it exists: refusals count among its errors.
        self.status: DeviceStatus | None = None

    def put_samples(self, samples: Sequence[Sample]) -> None:
        refusal = self._names.refusal
        kept: list[Sample] | None = None
        for index, sample in enumerate(samples):
            reason = refusal(sample.sensor)
            if reason is None:
                if kept is not None:
                    kept.append(sample)
                continue
            if kept is None:
                kept = list(samples[:index])
            self._refuse(sample, reason)
        if kept is None:
            self._sink.put_samples(samples)
        elif kept:
            self._sink.put_samples(kept)

    def put_dead_letter(self, dead_letter: DeadLetter) -> None:
        self._sink.put_dead_letter(dead_letter)

    @property
    def congested(self) -> bool:
        return self._sink.congested

    @property
    def paced(self) -> bool:
        return self._sink.paced

    async def wait_for_room(self) -> None:
        await self._sink.wait_for_room()

    def _refuse(self, sample: Sample, reason: str) -> None:
        raw = f"{sample.sensor}={sample.value}".encode(errors="replace")[:MAX_RAW]
        self._sink.put_dead_letter(DeadLetter(self._device, reason, raw, sample.ts))
        status = self.status
        if status is not None:
            status.readings -= 1
            status.errors += 1
            status.refused_names += 1
            status.last_error = reason
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning(
                "%s: %s (%r); kept as a dead letter, more are counted",
                self._device,
                reason,
                sample.sensor[:80],
            )
