"""Every device's way into the store, whatever its driver: sensor names are checked here,
then the device's transforms applied.

A device chooses its sensor names (the keys of a ``kv`` or ``json`` line, say). A name
that breaks the rule of ``gateway.reading.SensorNames``, or a new one beyond the
per-device bound, does not become a reading: it becomes a dead letter with the reason
and is counted, so a device inventing keys cannot grow memory (the latest-value table,
the dashboard, the transforms' state) without bound.

The transforms (``gateway.transforms``) see only samples whose name was accepted; dead
letters pass untouched. A window of an aggregating transform is closed by a timer on
the event loop at its end, so its reading is sent even when no further sample comes;
``close`` (at the device's stop) sends what the open windows hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from gateway.interfaces import DeviceStatus, SampleSink
from gateway.reading import DeadLetter, Sample, SensorNames
from gateway.transforms import Transforms, TransformSettings

log = logging.getLogger(__name__)

# Raw bytes kept of a refused sample ("name=value").
MAX_RAW = 256
# The shortest wait of the timer that closes transform windows (seconds).
TIMER_MIN = 0.001


class DeviceSink:
    """A ``SampleSink`` for one device, in front of the store."""

    def __init__(
        self,
        sink: SampleSink,
        device: str,
        transforms: Sequence[TransformSettings] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._device = device
        self._names = SensorNames()
        self._logged: set[str] = set()
        # The driver's status, once it exists: refusals count among its errors, and
        # its readings are the ones stored (what transforms drop is not among them).
        self.status: DeviceStatus | None = None
        self._transforms = Transforms(device, transforms) if transforms else None
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._closed = False

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
            self._refuse(sample, reason, name=True)
        accepted = samples if kept is None else kept
        if self._transforms is not None:
            accepted = self._transform(self._transforms, accepted)
        if accepted:
            self._sink.put_samples(accepted)

    def close(self) -> None:
        """The device stopped: send what the open windows hold, stop the timer."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_due = None
        if self._transforms is not None:
            out: list[Sample] = []
            self._transforms.flush(self._clock(), out)
            self._emit(out)

    def _transform(self, transforms: Transforms, samples: Sequence[Sample]) -> list[Sample]:
        out: list[Sample] = []
        used = 0
        for sample in samples:
            reason = transforms.feed(sample, out)
            if reason is None:
                used += 1
            else:
                self._refuse(sample, reason, name=False)
        if self.status is not None:
            # The driver counts what it read; the readings are what is stored.
            self.status.readings += len(out) - used
        self._schedule(transforms)
        return out

    def _schedule(self, transforms: Transforms) -> None:
        due = transforms.next_due()
        if self._closed or due is None or (self._timer_due is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        # Not sooner than TIMER_MIN: a window's end computed in floats may be a hair
        # before the time it really ends, and the timer must not spin meanwhile.
        self._timer = loop.call_later(max(TIMER_MIN, due - self._clock()), self._on_timer)
        self._timer_due = due

    def _on_timer(self) -> None:
        self._timer = self._timer_due = None
        transforms = self._transforms
        assert transforms is not None
        out: list[Sample] = []
        transforms.due(self._clock(), out)
        self._emit(out)
        self._schedule(transforms)

    def _emit(self, out: list[Sample]) -> None:
        if out:
            self._sink.put_samples(out)
            if self.status is not None:
                self.status.readings += len(out)

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

    def _refuse(self, sample: Sample, reason: str, *, name: bool) -> None:
        raw = f"{sample.sensor}={sample.value}".encode(errors="replace")[:MAX_RAW]
        self._sink.put_dead_letter(DeadLetter(self._device, reason, raw, sample.ts))
        status = self.status
        if status is not None:
            status.readings -= 1
            status.errors += 1
            status.refused_names += name
            status.last_error = reason
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning(
                "%s: %s (%r); kept as a dead letter, more are counted",
                self._device,
                reason,
                sample.sensor[:80],
            )
