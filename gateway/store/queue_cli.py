"""``edge-gateway queue``: the operator's view of the store (stats, dead letters, replay, purge)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from gateway.config import load_config
from gateway.settings import GatewaySettings
from gateway.store import admin
from gateway.store.read_only import printable

DEFAULT_DEAD_LETTERS = 20
DEFAULT_DATA_DIR = GatewaySettings(id="").data_dir


def configure_parser(parser: argparse.ArgumentParser) -> None:
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_mutually_exclusive_group()
    group.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help="configuration file; the store of its [gateway] data_dir",
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"data directory (default: {DEFAULT_DATA_DIR})",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    stats = actions.add_parser(
        "stats",
        parents=[where],
        help="depth per consumer, size, last seq, oldest unsent, dropped, dead letters",
    )
    stats.add_argument("--json", action="store_true", help="one JSON object")

    dead = actions.add_parser(
        "dead-letters", parents=[where], help="the newest dead letters with their raw bytes"
    )
    dead.add_argument("--limit", type=_positive, default=DEFAULT_DEAD_LETTERS, metavar="N")
    dead.add_argument("--json", action="store_true", help="one JSON object per line")

    replay = actions.add_parser(
        "replay",
        parents=[where],
        help="move an uplink's cursor back so stored readings are sent again",
    )
    replay.add_argument("--uplink", required=True, metavar="NAME", help="cursor name, e.g. mqtt")
    replay.add_argument("--from-seq", required=True, type=_positive, metavar="SEQ")

    purge = actions.add_parser(
        "purge", parents=[where], help="delete dead letters, or readings before a seq"
    )
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument("--dead-letters", action="store_true", help="delete every dead letter")
    what.add_argument(
        "--readings-before", type=_positive, metavar="SEQ", help="delete readings with seq < SEQ"
    )
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if args.action == "stats":
        return _stats(data_dir, as_json=args.json)
    if args.action == "dead-letters":
        return _dead_letters(data_dir, args.limit, as_json=args.json)
    if args.action == "replay":
        return _replay(data_dir, args.uplink, args.from_seq)
    return _purge(data_dir, args)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {value}")
    return value


def _data_dir(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return load_config(args.config).gateway.data_dir
    if args.data_dir is not None:
        return Path(args.data_dir)
    return DEFAULT_DATA_DIR


def _stats(data_dir: Path, *, as_json: bool) -> int:
    stats = admin.queue_stats(data_dir)
    if as_json:
        print(json.dumps(asdict(stats), indent=2))
        return 0
    span = f" (seq {stats.first_seq}..{stats.last_seq})" if stats.first_seq is not None else ""
    print(f"store          {stats.path}{' (gateway running)' if stats.running else ''}")
    print(f"last seq       {stats.last_seq}")
    print(f"stored         {stats.stored} readings{span}")
    print(f"size           {_size(stats.bytes)}")
    print(f"dropped        {stats.dropped}")
    lost = f", {stats.dead_letters_lost} lost" if stats.dead_letters_lost else ""
    print(
        f"dead letters   {stats.dead_letters_total} in all, {stats.dead_letters_stored} stored"
        f"{lost}"
    )
    for name in stats.moved_aside:
        print(f"moved aside    {name} (a damaged database, kept for inspection)")
    if not stats.consumers:
        print("consumers      none")
        return 0
    width = max(len("CONSUMER"), *(len(c.name) for c in stats.consumers))
    print(f"{'CONSUMER':<{width}}  {'ACKED':>10}  {'DEPTH':>10}  OLDEST UNSENT")
    for c in stats.consumers:
        age = "-" if c.oldest_unsent_age is None else _age(c.oldest_unsent_age)
        print(f"{c.name:<{width}}  {c.acked_seq:>10}  {c.depth:>10}  {age}")
    return 0


def _dead_letters(data_dir: Path, limit: int, *, as_json: bool) -> int:
    rows = admin.dead_letters(data_dir, limit)
    for row in rows:
        if as_json:
            obj = {
                "id": row.id,
                "ts": row.ts,
                "device": row.device,
                "reason": row.reason,
                "raw": printable(row.raw),
                "raw_hex": row.raw.hex(),
            }
            print(json.dumps(obj, ensure_ascii=False))
        else:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.ts))
            print(f"{row.id}  {when}  {row.device}  {row.reason}  {printable(row.raw)}")
    if not rows and not as_json:
        print("no dead letters")
    return 0


def _replay(data_dir: Path, uplink: str, from_seq: int) -> int:
    result = admin.replay(data_dir, uplink, from_seq)
    print(f"{result.consumer}: cursor moved back from {result.old_seq} to {result.new_seq}")
    if result.resent:
        print(
            f"{result.resent} stored readings (seq {result.first_stored}..{result.old_seq}) "
            "will be sent again when the gateway starts"
        )
    else:
        print("no stored reading in that range; nothing will be sent again")
    if result.first_stored is not None and result.first_stored > from_seq:
        print(f"readings {from_seq}..{result.first_stored - 1} are no longer stored")
    return 0


def _purge(data_dir: Path, args: argparse.Namespace) -> int:
    if args.dead_letters:
        n = admin.count_dead_letters(data_dir)
        question = f"delete {n} dead letters from {data_dir}?"
        if not (args.yes or _confirm(question)):
            print("nothing deleted")
            return 1
        print(f"deleted {admin.purge_dead_letters(data_dir)} dead letters")
        return 0
    seq = args.readings_before
    total, unsent = admin.count_readings_before(data_dir, seq)
    warning = f", {unsent} of them not yet acknowledged by every uplink" if unsent else ""
    question = f"delete {total} readings with seq < {seq}{warning}?"
    if not (args.yes or _confirm(question)):
        print("nothing deleted")
        return 1
    print(f"deleted {admin.purge_readings_before(data_dir, seq)} readings")
    return 0


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
