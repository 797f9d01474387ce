"""A Pi-class CPU budget for a process: one core, and a CFS quota of a share of it.

The process is pinned to one core (every thread it has, and so every thread it starts
later) and moved into a child cgroup of its own whose CPU bandwidth is ``quota`` of
``period`` microseconds. cgroup v2 (``cpu.max``) where its cpu controller is available;
on a host whose cpu controller is still on cgroup v1 (a hybrid hierarchy), the same CFS
bandwidth through ``cpu.cfs_quota_us``. Where neither can be written, ``CapUnavailable``
says why.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil


class CapUnavailable(RuntimeError):
    """No cgroup with a writable CPU quota here; the message says why."""


def _mounts(fstype: str) -> list[tuple[Path, set[str]]]:
    """(mount point, super options) of each mount of ``fstype``, from mountinfo."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            _, _, rest = line.partition(" - ")
            kind, _source, options = [*rest.split(), "", ""][:3]
            if kind == fstype:
                out.append((Path(line.split()[4]), set(options.split(","))))
    return out


@dataclass
class CpuCap:
    """A child cgroup holding the capped processes; ``close`` removes it once they exit."""

    path: Path
    version: int
    quota_us: int
    period_us: int
    core: int
    pids: list[int] = field(default_factory=list)

    def add(self, pid: int) -> None:
        """Pin ``pid`` to the core and move it into the cgroup (all of its threads)."""
        for thread in psutil.Process(pid).threads():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(thread.id, {self.core})
        (self.path / "cgroup.procs").write_text(f"{pid}\n")
        self.pids.append(pid)

    def throttling(self) -> dict[str, float]:
        """Periods run, periods throttled and time throttled (s), from cpu.stat."""
        stat: dict[str, int] = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            stat[key] = int(value)
        if self.version == 2:
            return {
                "periods": stat.get("nr_periods", 0),
                "throttled_periods": stat.get("nr_throttled", 0),
                "throttled_s": stat.get("throttled_usec", 0) / 1e6,
            }
        return {
            "periods": stat.get("nr_periods", 0),
            "throttled_periods": stat.get("nr_throttled", 0),
            "throttled_s": stat.get("throttled_time", 0) / 1e9,
        }

    def close(self, timeout: float = 30.0) -> None:
        # A cgroup can be removed only once its processes are gone.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _v2(name: str, quota_us: int, period_us: int) -> Path:
    reasons = []
    for mount, _ in _mounts("cgroup2"):
        controllers = (mount / "cgroup.controllers").read_text().split()
        if "cpu" not in controllers:
            reasons.append(f"{mount} has no cpu controller (controllers: {' '.join(controllers)})")
            continue
        try:
            if "cpu" not in (mount / "cgroup.subtree_control").read_text().split():
                (mount / "cgroup.subtree_control").write_text("+cpu\n")
            path = mount / name
            path.mkdir()
            (path / "cpu.max").write_text(f"{quota_us} {period_us}\n")
        except OSError as exc:
            reasons.append(f"{mount}: {exc}")
            continue
        return path
    raise CapUnavailable("; ".join(reasons) or "no cgroup2 mount")


def _v1(name: str, quota_us: int, period_us: int) -> Path:
    reasons = []
    for mount, options in _mounts("cgroup"):
        if "cpu" not in options:
            continue
        try:
            path = mount / name
            path.mkdir()
            (path / "cpu.cfs_period_us").write_text(f"{period_us}\n")
            (path / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
        except OSError as exc:
            reasons.append(f"{mount}: {exc}")
            continue
        return path
    raise CapUnavailable("; ".join(reasons) or "no cgroup v1 cpu controller mounted")


@contextlib.contextmanager
def cpu_cap(share: float, period_us: int = 100_000) -> Iterator[CpuCap]:
    """A cgroup capped at ``share`` of one core, and that core; removed on exit."""
    quota_us = round(share * period_us)
    name = f"edge-bench-pi-{os.getpid()}-{time.monotonic_ns()}"
    core = max(os.sched_getaffinity(0))
    try:
        path, version = _v2(name, quota_us, period_us), 2
    except CapUnavailable as v2_reason:
        try:
            path, version = _v1(name, quota_us, period_us), 1
        except CapUnavailable as v1_reason:
            raise CapUnavailable(f"cgroup v2: {v2_reason}; cgroup v1: {v1_reason}") from None
    cap = CpuCap(path, version, quota_us, period_us, core)
    try:
        yield cap
    finally:
        cap.close()
