"""Modbus RTU polls per second on one bus, against the limit the baud rate sets.

``python -m benchmarks modbus`` (or ``python -m benchmarks.modbus_bus [--quick]``).

The simulated bus (``edge-gateway sim modbus``, its own process) paces its bytes at the
baud rate, 11 bits a character, and answers ``TURNAROUND`` after each request. The
gateway's ``modbus_rtu`` driver, in this process, polls one slave back to back (a
``poll_interval`` far below a poll's length): one request for 14 holding registers a
poll. The baseline of each figure is the physical limit of that exchange on the wire:

    request + answer characters x 11 bits / baud     the frames
    + max(turnaround, silent interval)               the slave's wait before answering
    + silent interval                                the master's before the next request

so the ratio is the share of the wire's capacity the gateway uses (target ≥ 90 %). The
CPU of this process per poll (driver, pymodbus, event loop) is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import BenchError, python_module, scratch_dir, terminate, wait_for
from benchmarks.plan import FULL, QUICK, Plan
from benchmarks.report import BenchResult, Figure, table, write_json
from drivers.modbus_rtu.codec import char_time, plan, read_request, read_response_size
from drivers.modbus_rtu.codec import silent_interval as silence_for
from drivers.modbus_rtu.device import METER_REGISTERS
from drivers.modbus_rtu.settings import ModbusRtuSettings
from drivers.modbus_rtu.transport import ModbusRtuDriver
from gateway.reading import DeadLetter, Sample

BAUDRATES = (9600, 19200, 115200)
TURNAROUND = 0.002  # the simulator's default
TARGET = 0.9
# Holding registers 0 to 13 of the simulated meter: one request, a 33-byte answer.
REGISTERS = tuple(r for r in METER_REGISTERS if r.table == "holding" and r.address < 14)


class CountingSink:
    """Counts what the driver reads; never congested, nothing stored."""

    congested = False
    paced = False

    def __init__(self) -> None:
        self.samples = 0
        self.dead = 0

    def put_samples(self, samples: Sequence[Sample]) -> None:
        self.samples += len(samples)

    def put_dead_letter(self, dead_letter: DeadLetter) -> None:
        self.dead += 1

    async def wait_for_room(self) -> None:
        return


def physical_poll_seconds(baudrate: int, turnaround: float) -> float:
    """The shortest a poll of ``REGISTERS`` can take on the wire (see the module doc)."""
    (block,) = plan(REGISTERS)
    chars = len(read_request(1, block)) + read_response_size(block)
    silence = silence_for(baudrate)
    return chars * char_time(baudrate) + max(turnaround, silence) + silence


async def _measure(link: Path, baudrate: int, warmup: float, window: float) -> dict[str, float]:
    settings = ModbusRtuSettings(
        id="meter-1",
        port=str(link),
        baudrate=baudrate,
        slave_id=1,
        poll_interval=0.0001,
        timeout=1.0,
        registers=REGISTERS,
    )
    sink = CountingSink()
    driver = ModbusRtuDriver(settings, sink)
    task = asyncio.create_task(driver.run(), name="bench-modbus-driver")
    try:
        await asyncio.sleep(warmup)
        polls0, cpu0, t0 = driver.slave.polls, time.process_time(), time.monotonic()
        await asyncio.sleep(window)
        polls1, cpu1, t1 = driver.slave.polls, time.process_time(), time.monotonic()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    polls = polls1 - polls0
    if not polls:
        raise BenchError(f"no poll answered at {baudrate} baud: {driver.status.last_error}")
    return {
        "polls": polls,
        "seconds": t1 - t0,
        "polls_per_s": polls / (t1 - t0),
        "cpu_ms_per_poll": 1000 * (cpu1 - cpu0) / polls,
        "failures": sum(driver.counts.values()),
        "dead_letters": sink.dead,
    }


def run_modbus(plan_: Plan) -> BenchResult:
    result = BenchResult("modbus")
    work = scratch_dir("modbus")
    for baudrate in BAUDRATES:
        link = work / f"rs485-{baudrate}"
        log = (work / f"sim-{baudrate}.log").open("wb")
        argv = python_module("gateway", "sim", "modbus", "--link", str(link))
        argv += ["--slaves", "1", "--baudrate", str(baudrate), "--turnaround", str(TURNAROUND)]
        sim = subprocess.Popen(argv, stdout=log, stderr=log)
        log.close()
        try:
            wait_for(link.exists, 30, f"the simulated bus at {baudrate} baud")
            measured = asyncio.run(_measure(link, baudrate, plan_.warmup, plan_.window))
        finally:
            terminate(sim, 20)
        limit = 1 / physical_poll_seconds(baudrate, TURNAROUND)
        result.details[str(baudrate)] = {**measured, "limit_polls_per_s": limit}
        result.figures.append(
            Figure(
                "modbus",
                f"polls/s at {baudrate} baud",
                "polls/s",
                measured["polls_per_s"],
                target=TARGET * limit,
                goal="min",
                baseline=limit,
                note="baseline: the wire's limit for this exchange",
            )
        )
        result.figures.append(
            Figure("modbus", f"CPU per poll at {baudrate} baud", "ms", measured["cpu_ms_per_poll"])
        )
    result.notes.append(
        f"one slave, 14 holding registers a poll (8-byte request, 33-byte answer), "
        f"turnaround {TURNAROUND * 1000:g} ms, 11 bits a character"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.modbus_bus", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 s windows instead of 10 s")
    args = parser.parse_args()
    started = time.time()
    result = run_modbus(QUICK if args.quick else FULL)
    print(table([result]))
    print(json.dumps(result.details, indent=1))
    path = write_json([result], "quick" if args.quick else "full", started)
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
