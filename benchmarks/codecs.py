"""Every driver codec's decoding speed on one core, as a multiple of a serial port's rate.

``python -m benchmarks codecs`` (or ``python -m benchmarks.codecs [--quick]``).

Each codec decodes a stream its simulator writes (valid input), fed in 256-byte chunks
as a port's reads return it; the figure is bytes decoded per second of this process's
CPU. The baseline is the byte rate of a 115,200-baud port (11,520 bytes/s at 10 bits a
character), so each ratio says how many such ports one core keeps up with; the target
is 100. Modbus is the gateway's receive path: pymodbus's RTU framer on an answer, then
``Block.values`` on its registers. The CRCs are also measured alone, against
pymodbus's pure-Python CRC-16/MODBUS as their baseline.
"""

from __future__ import annotations

import argparse
import binascii
import functools
import json
import random
import sys
import time
import zlib
from collections.abc import Callable

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

from benchmarks.plan import FULL, QUICK, Plan
from benchmarks.report import BenchResult, Figure, table, write_json
from drivers.framed.codec import CRCS, FrameCodec, FrameDecoder
from drivers.framed.device import SIM_FIELDS, FramedSource
from drivers.modbus_rtu.codec import crc16, plan, with_crc
from drivers.modbus_rtu.device import METER_REGISTERS
from drivers.nmea.codec import NmeaDecoder
from drivers.nmea.device import GpsSource
from drivers.serial_line.codec import LineDecoder
from drivers.serial_line.device import ARDUINO_PATTERN, make_source

PORT_BYTES_PER_S = 115200 / 10
TARGET = 100.0
CHUNK = 256
STREAM_BYTES = 256 * 1024


def _stream(line: Callable[[], bytes]) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < STREAM_BYTES:
        parts.append(line())
        size += len(parts[-1])
    return b"".join(parts)


def _line_streams(rng: random.Random) -> dict[str, tuple[bytes, Callable[[], LineDecoder]]]:
    thermo = make_source("thermo", rng)
    counter = make_source("counter", rng)
    arduino = make_source("arduino", rng)
    n = iter(range(10**9))
    return {
        "line kv": (_stream(thermo.line), lambda: LineDecoder("d", "kv")),
        "line csv": (
            _stream(lambda: b"%d,21.5,40.2,1013.2\n" % next(n)),
            lambda: LineDecoder("d", "csv", columns=("n", "t", "h", "p")),
        ),
        "line json": (
            _stream(lambda: b'{"n": %d, "t": 21.5, "env": {"h": 40.2}}\n' % next(n)),
            lambda: LineDecoder("d", "json"),
        ),
        "line regex": (
            _stream(arduino.line),
            lambda: LineDecoder("d", "regex", pattern=ARDUINO_PATTERN),
        ),
        "line kv (counter)": (_stream(counter.line), lambda: LineDecoder("d", "kv")),
    }


def _cpu_rate(decode: Callable[[], int], data_bytes: int, seconds: float) -> float:
    """Bytes per CPU second: ``decode()`` (which decodes ``data_bytes`` and returns the
    samples it made) run repeatedly for about ``seconds``."""
    done = 0
    cpu0 = time.process_time()
    while True:
        if decode() == 0:
            raise RuntimeError("the codec made no samples of valid input")
        done += data_bytes
        spent = time.process_time() - cpu0
        if spent >= seconds:
            return done / spent


def _feeder(data: bytes, make: Callable[[], LineDecoder | NmeaDecoder | FrameDecoder]) -> int:
    decoder = make()
    samples = 0
    for i in range(0, len(data), CHUNK):
        out = decoder.feed(data[i : i + CHUNK], 0.0)
        samples += len(out.samples)
        if out.dead_letters:
            raise RuntimeError(f"valid input made dead letters: {out.dead_letters[0].reason}")
    return samples


def _modbus_decode() -> tuple[bytes, Callable[[], int]]:
    """Answers of the simulated meter's holding block, and their decoding."""
    block = plan(METER_REGISTERS)[0]
    rng = random.Random(3)
    answers = []
    for _ in range(2000):
        words = [rng.randrange(65536) for _ in range(block.count)]
        data = b"".join(w.to_bytes(2, "big") for w in words)
        answers.append(with_crc(bytes([1, 3, len(data)]) + data))
    stream = b"".join(answers)
    framer = FramerRTU(DecodePDU(False))

    def decode() -> int:
        values = 0
        for answer in answers:
            used, pdu = framer.handleFrame(answer, 1, 0)
            if pdu is None or used != len(answer):
                raise RuntimeError("pymodbus did not decode a valid answer")
            values += len(block.values(pdu.registers))
        return values

    return stream, decode


def run_codecs(plan_: Plan) -> BenchResult:
    result = BenchResult("codecs")
    seconds = plan_.window / 4
    rng = random.Random(1)
    cases: dict[str, tuple[bytes, Callable[[], int]]] = {}
    for name, (data, make) in _line_streams(rng).items():
        cases[name] = (data, functools.partial(_feeder, data, make))
    gps = _stream(GpsSource(random.Random(2)).line)
    cases["nmea"] = (gps, functools.partial(_feeder, gps, lambda: NmeaDecoder("gps")))
    for framing in ("cobs", "slip"):
        for crc_name in CRCS:
            codec = FrameCodec(SIM_FIELDS, framing=framing, crc=crc_name)  # type: ignore[arg-type]
            data = _stream(FramedSource(random.Random(4), codec=codec).line)
            make_framed = functools.partial(FrameDecoder, "f", codec)
            cases[f"framed {framing} {crc_name}"] = (
                data,
                functools.partial(_feeder, data, make_framed),
            )
    cases["modbus answers"] = _modbus_decode()
    for name, (data, decode) in cases.items():
        rate = _cpu_rate(decode, len(data), seconds)
        result.details[name] = {"bytes_per_cpu_s": rate, "stream_bytes": len(data)}
        result.figures.append(
            Figure(
                "codecs",
                name,
                "B/s",
                rate,
                target=TARGET * PORT_BYTES_PER_S,
                goal="min",
                baseline=PORT_BYTES_PER_S,
                note="baseline: a 115,200-baud port's bytes per second",
            )
        )
    block = bytes(random.Random(5).randrange(256) for _ in range(64))
    reference = _crc_rate(lambda: FramerRTU.compute_CRC(block), len(block), seconds)
    crcs: dict[str, Callable[[], int]] = {
        "CRC-16/MODBUS (fastcrc)": lambda: crc16(block),
        "CRC-16/CCITT-FALSE (binascii)": lambda: binascii.crc_hqx(block, 0xFFFF),
        "CRC-32 (zlib)": lambda: zlib.crc32(block),
    }
    for name, crc in crcs.items():
        rate = _crc_rate(crc, len(block), seconds)
        result.details[name] = {"bytes_per_cpu_s": rate, "pure_python_bytes_per_cpu_s": reference}
        result.figures.append(
            Figure(
                "codecs",
                f"{name}, 64-byte frames",
                "B/s",
                rate,
                baseline=reference,
                note="baseline: pymodbus's pure-Python CRC-16/MODBUS",
            )
        )
    result.notes.append(
        f"256 KiB streams fed {CHUNK} bytes at a time; baseline {PORT_BYTES_PER_S:,.0f} B/s "
        "(115,200 baud); target 100x"
    )
    return result


def _crc_rate(crc: Callable[[], int], size: int, seconds: float) -> float:
    rounds = 0
    cpu0 = time.process_time()
    while True:
        for _ in range(1000):
            crc()
        rounds += 1000
        spent = time.process_time() - cpu0
        if spent >= seconds:
            return rounds * size / spent


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.codecs", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    args = parser.parse_args()
    started = time.time()
    result = run_codecs(QUICK if args.quick else FULL)
    print(table([result]))
    print(json.dumps(result.details, indent=1))
    print(f"\nJSON: {write_json([result], 'quick' if args.quick else 'full', started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
