"""``edge-gateway ingest``: run the reference ingest server until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from gateway.cloud.ingest_server import IngestSettings, serve
from gateway.config import LOG_LEVELS, parse_listen
from gateway.errors import GatewayError
from gateway.logs import setup_logging


class UsageError(GatewayError):
    exit_code = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="address to serve /ingest on"
    )
    parser.add_argument(
        "--db",
        required=True,
        metavar="URL",
        help="sqlite:///path/to/readings.db or postgresql://user@host/db",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token gateways must send")
    token.add_argument("--token-file", type=Path, metavar="FILE", help="file holding the token")
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve wss:// (PEM)")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="key of --tls-cert (PEM)")
    parser.add_argument(
        "--client-ca",
        type=Path,
        metavar="FILE",
        help="require gateways' client certificates signed by this CA (mutual TLS)",
    )
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO")


def settings_of(args: argparse.Namespace) -> IngestSettings:
    try:
        host, port = parse_listen(args.listen)
    except ValueError as err:
        raise UsageError(f"--listen {err}") from None
    if (args.tls_key or args.client_ca) and args.tls_cert is None:
        raise UsageError("--tls-key and --client-ca need --tls-cert")
    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"--token-file: {err}") from None
        if not token:
            raise UsageError(f"--token-file: {args.token_file} is empty")
    return IngestSettings(
        host=host,
        port=port,
        db_url=args.db,
        token=token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    setup_logging(args.log_level)
    return asyncio.run(_serve_until_signal(settings))


async def _serve_until_signal(settings: IngestSettings) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await serve(settings)
    except asyncio.CancelledError:
        return 0
    except OSError as err:
        # The port is taken, the certificate file missing, …: one line, exit 1.
        raise GatewayError(f"ingest: {err}") from None
    return 0
