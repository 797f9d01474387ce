"""A counter device on a pseudo-terminal: lines ``n=<i>``, as fast as asked.

Used when the product's simulator is not installed. Lines due since the last
tick are written in one go, so high rates cost few system calls; a reader that
falls behind blocks the writes (the pty buffer is the only queue).

    python -m benchmarks.feeder --link PATH --rate HZ [--count N]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from benchmarks.harness import PtyLink

TICK = 0.001
MAX_CHUNK = 10_000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--link", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--count", type=int, default=0, help="0 = until stopped")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    link = PtyLink(args.link)
    print(json.dumps({"event": "ready", "link": str(args.link)}), flush=True)
    sent = 0
    start = time.monotonic()
    try:
        while args.count == 0 or sent < args.count:
            due = int((time.monotonic() - start) * args.rate) + 1
            # A blocked reader must not make the next write unbounded.
            due = min(due, sent + MAX_CHUNK)
            if args.count:
                due = min(due, args.count)
            if due > sent:
                link.write(b"".join(b"n=%d\n" % n for n in range(sent + 1, due + 1)))
                sent = due
            else:
                time.sleep(TICK)
        # Keep the port open until stopped, so the reader drains what it holds.
        signal.pause()
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
