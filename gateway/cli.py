"""The ``edge-gateway`` command: parses arguments and dispatches to a subcommand.

Each subcommand lives in the module that owns it, which exposes
``configure_parser(parser)`` and ``run(args) -> int``. Only the module of the
command being run is imported: a command starts without loading the others, and a
fault in one command's module cannot break the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway import __version__
from gateway.config import LOG_LEVELS, load_config
from gateway.config_warnings import config_warnings
from gateway.errors import ConfigError, GatewayError
from gateway.logs import setup_logging
from gateway.settings import Settings

PROG = "edge-gateway"

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class _Command:
    help: str
    module: str  # the module that provides configure_parser and run


COMMANDS = {
    "run": _Command("run the gateway in the foreground until SIGTERM or SIGINT", __name__),
    "check-config": _Command("validate a configuration file and name every bad key", __name__),
    "demo": _Command(
        "simulated devices, the gateway and the dashboard on this machine", "gateway.demo"
    ),
    "sim": _Command("one simulated serial device on a pseudo-terminal", "simulators.cli"),
    "record": _Command(
        "record a serial port's raw bytes and their timing into a capture file",
        "simulators.record",
    ),
    "fleet-sim": _Command(
        "N real gateways on this machine, with simulated devices and faults",
        "gateway.fleet.cli",
    ),
    "queue": _Command(
        "inspect the store: stats, dead letters, replay, purge", "gateway.store.queue_cli"
    ),
    "ingest": _Command(
        "the reference ingest server for the WebSocket uplink (SQLite or PostgreSQL)",
        "gateway.cloud.ingest_cli",
    ),
    "consume": _Command(
        "land telemetry from the broker in a database, once per gateway and seq",
        "gateway.cloud.consume",
    ),
    "systemd-dropin": _Command(
        "print the systemd drop-in a configuration needs: its port and devices",
        "gateway.systemd_dropin",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        parser, run = build_parser(_command_name(args_list))
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:
            # argparse exits for --help, --version and usage errors.
            return exc.code if isinstance(exc.code, int) else 2
        if run is None:
            parser.print_usage(sys.stderr)
            print(f"{PROG}: error: a command is required", file=sys.stderr)
            return 2
        return run(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        for problem in exc.problems:
            _error(str(problem))
        return exc.exit_code
    except GatewayError as exc:
        _error(str(exc))
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, not a traceback
        if debug:
            traceback.print_exc()
        else:
            _error(f"unexpected error: {type(exc).__name__}: {exc}")
            _error("run with --debug for the traceback")
        return 1


def build_parser(command: str | None) -> tuple[argparse.ArgumentParser, Run | None]:
    """The full parser, with the options of ``command`` (only its module is imported)."""
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an unexpected error",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Store-and-forward edge gateway: serial and GPIO sensors to MQTT, "
        "with a local live dashboard.",
        epilog="exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration",
        parents=[debug],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    run: Run | None = None
    for name, command_info in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=command_info.help, description=command_info.help, parents=[debug]
        )
        if name == command:
            configure, run = _load(name, command_info.module)
            configure(sub)
    return parser, run


def _command_name(argv: Sequence[str]) -> str | None:
    # The top-level options take no values, so the first word that is not an
    # option is the command.
    return next((a for a in argv if not a.startswith("-")), None)


def _load(name: str, module_name: str) -> tuple[Configure, Run]:
    if module_name == __name__:
        return _LOCAL[name]
    module = importlib.import_module(module_name)
    return module.configure_parser, module.run


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        required=True,
        metavar="FILE",
        help="configuration file (TOML)",
    )


def _configure_run(parser: argparse.ArgumentParser) -> None:
    _add_config_option(parser)
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="override [gateway] log_level",
    )


def _run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    # Imported here: the running gateway pulls in every part, which the other
    # commands do not need.
    from gateway import app  # noqa: PLC0415

    setup_logging(args.log_level or settings.gateway.log_level)
    for warning in config_warnings(settings):
        logging.getLogger(__name__).warning("%s", warning)
    return asyncio.run(app.run(settings))


def _configure_check(parser: argparse.ArgumentParser) -> None:
    _add_config_option(parser)


def _check(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    print(f"{args.config}: valid; {summary(settings)}")
    # Warnings only: the file is valid and may be meant that way.
    for warning in config_warnings(settings):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return 0


def summary(settings: Settings) -> str:
    """One line describing what a configuration runs."""
    devices = [d.id if d.enabled else f"{d.id} (disabled)" for d in settings.devices]
    uplinks = [
        f"{e.name} ({e.type}) {getattr(e.transport, 'url', '')}".rstrip()
        for e in settings.all_uplinks()
    ]
    local = settings.local.listen if settings.local is not None else "off"
    return (
        f"gateway {settings.gateway.id}, "
        f"{len(devices)} device(s){': ' if devices else ''}{', '.join(devices)}; "
        f"uplinks: {', '.join(uplinks) or 'none'}; local server: {local}"
    )


_LOCAL: dict[str, tuple[Configure, Run]] = {
    "run": (_configure_run, _run),
    "check-config": (_configure_check, _check),
}
