"""The gateway watched on a timer: its process (psutil) and its own view (status, metrics).

A sample where the gateway is down (between a kill and the next start) or does not
answer in time keeps what it could read and leaves the rest ``None``; the plots show
those as gaps. CPU is the process's user + system time over the time since the
previous sample of the same process, in percent of one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil

from tests.support.gateway_proc import TOKEN, GatewayProcess

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
LAG_METRIC = "edge_gateway_store_oldest_unsent_age_seconds"


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the campaign's start
    pid: int | None
    rss: int | None  # bytes
    fds: int | None
    cpu: float | None  # percent of one core since the previous sample of this pid
    depth: int | None
    last_seq: int | None
    acked_seq: int | None
    dropped: int | None
    lag: float | None  # age of the oldest unsent reading, seconds (from /metrics)


def metric_value(text: str, name: str) -> float | None:
    """The value of an unlabelled metric in Prometheus text, or None if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Sampler:
    def __init__(self, gw: GatewayProcess, t0: float, interval: float) -> None:
        self.gw = gw
        self.t0 = t0
        self.interval = interval
        self.samples: list[Sample] = []
        self._proc: psutil.Process | None = None
        self._last_cpu: tuple[int, float, float] | None = None  # pid, cpu seconds, t

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
            task = asyncio.create_task(self._loop(session), name="soak-sampler")
            try:
                yield self
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(self, session: aiohttp.ClientSession) -> None:
        next_at = time.monotonic()
        while True:
            self.samples.append(await self._sample(session))
            # A late tick is not made up for: samples carry their own time.
            next_at = max(next_at + self.interval, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def _sample(self, session: aiohttp.ClientSession) -> Sample:
        t = time.monotonic() - self.t0
        pid, rss, fds, cpu = self._process(t)
        status: dict[str, Any] | None = None
        lag: float | None = None
        if pid is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(
                    f"{self.gw.base_url}/api/v1/status",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as resp:
                    if resp.status == 200:
                        status = await resp.json()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(f"{self.gw.base_url}/metrics") as resp:
                    if resp.status == 200:
                        lag = metric_value(await resp.text(), LAG_METRIC)
        store = status["store"] if status else {}
        uplink = status["uplinks"].get("mqtt", {}) if status else {}
        return Sample(
            t=t,
            pid=pid,
            rss=rss,
            fds=fds,
            cpu=cpu,
            depth=store.get("depth"),
            last_seq=store.get("last_seq"),
            acked_seq=uplink.get("acked_seq"),
            dropped=store.get("dropped"),
            lag=lag,
        )

    def _process(self, t: float) -> tuple[int | None, int | None, int | None, float | None]:
        popen = self.gw.proc
        if popen is None or popen.poll() is not None:
            return None, None, None, None
        try:
            if self._proc is None or self._proc.pid != popen.pid:
                self._proc = psutil.Process(popen.pid)
            with self._proc.oneshot():
                rss = self._proc.memory_info().rss
                fds = self._proc.num_fds()
                times = self._proc.cpu_times()
        except psutil.Error:  # it ended between poll() and the reads
            return None, None, None, None
        cpu_seconds = times.user + times.system
        cpu: float | None = None
        if self._last_cpu is not None and self._last_cpu[0] == popen.pid and t > self._last_cpu[2]:
            cpu = 100.0 * (cpu_seconds - self._last_cpu[1]) / (t - self._last_cpu[2])
        self._last_cpu = (popen.pid, cpu_seconds, t)
        return popen.pid, rss, fds, cpu
