"""The built-in commands, each an async handler of its arguments.

They act on the running gateway through ``Runtime`` (implemented by
``gateway.app.Gateway``), so they can be tested against a small runtime of
their own. Device reads and writes go to the driver's own ``read_now()`` and
``write(sensor, value)`` methods: a driver without them answers that the device
cannot be read or written on demand.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping
from typing import Protocol

from gateway.commands.router import Args, BadArgs, CommandError, Handler
from gateway.errors import DriverError, UplinkError
from gateway.interfaces import GatewayView, Resender
from gateway.settings import CommandSettings, WriteRule

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# How long `reload` waits for the new configuration to be in force.
RELOAD_TIMEOUT = 30.0
# The most seqs one `resend` may span (its readings are read and sent part by part).
MAX_RESEND = 100_000


class Runtime(Protocol):
    """What the built-in commands need of the running gateway."""

    def status_body(self) -> dict[str, object]: ...

    def configured_devices(self) -> set[str]: ...

    async def set_device_enabled(self, device: str, enabled: bool) -> bool:
        """Start or stop a configured device; False when it already was so."""

    async def reload(self) -> None:
        """Reload the configuration file and return once it is in force."""


def builtin_handlers(
    runtime: Runtime, view: GatewayView, settings: Callable[[], CommandSettings]
) -> dict[str, Handler]:
    """The handlers by command name; ``settings`` gives the ``[commands]`` now in force."""

    async def ping(_args: Args) -> object:
        return {"gateway": view.gateway_id, "last_seq": view.log.last_seq}

    async def status(_args: Args) -> object:
        return runtime.status_body()

    async def log_level(args: Args) -> object:
        level = _text(args, "level").upper()
        if level not in LOG_LEVELS:
            raise BadArgs(f'"level" must be one of {", ".join(LOG_LEVELS)}')
        root = logging.getLogger()
        previous = logging.getLevelName(root.level)
        root.setLevel(level)
        return {"level": level, "previous": previous}

    async def reload(_args: Args) -> object:
        await runtime.reload()
        return {"reloaded": True}

    def configured(args: Args) -> str:
        device = _text(args, "device")
        if device not in runtime.configured_devices():
            raise BadArgs(f"no device {device!r} in the configuration")
        return device

    async def enable(args: Args) -> object:
        device = configured(args)
        changed = await runtime.set_device_enabled(device, True)
        return {"device": device, "enabled": True, "changed": changed}

    async def disable(args: Args) -> object:
        device = configured(args)
        changed = await runtime.set_device_enabled(device, False)
        return {"device": device, "enabled": False, "changed": changed}

    def running(device: str) -> object:
        driver = view.devices.get(device)
        if driver is None:
            raise CommandError(f"device {device!r} is not running")
        return driver

    async def read(args: Args) -> object:
        device = configured(args)
        method = getattr(running(device), "read_now", None)
        if not callable(method):
            raise CommandError(f"device {device} cannot be read on demand")
        return {"device": device, "values": await _from_driver(method)}

    async def write(args: Args) -> object:
        device = configured(args)
        sensor = _text(args, "sensor")
        if "value" not in args:
            raise BadArgs('"value" is required')
        value = args["value"]
        _check_write(settings().writes, device, sensor, value)
        method = getattr(running(device), "write", None)
        if not callable(method):
            raise CommandError(f"device {device} cannot be written")
        confirmed = await _from_driver(method, sensor, value)
        return {"device": device, "sensor": sensor, "value": value, "confirmed": confirmed}

    async def resend(args: Args) -> object:
        name = _text(args, "uplink")
        uplink = view.uplinks.get(name)
        if uplink is None:
            running = ", ".join(sorted(view.uplinks)) or "none"
            raise BadArgs(f"no uplink {name!r} is running (running: {running})")
        first, last = _seq(args, "from_seq"), _seq(args, "to_seq")
        if last < first:
            raise BadArgs('"to_seq" must not be less than "from_seq"')
        if last - first + 1 > MAX_RESEND:
            raise BadArgs(f"at most {MAX_RESEND} seqs per resend (asked for {last - first + 1})")
        last_seq = view.log.last_seq
        if last > last_seq:
            raise BadArgs(f'"to_seq" {last} is beyond the last committed seq {last_seq}')
        oldest = await view.log.oldest_seq()
        if oldest is None or oldest > first:
            _gone(first, last, oldest)
        if not isinstance(uplink, Resender):
            raise CommandError(f"uplink {name} cannot send readings again")
        try:
            sent = await uplink.resend(first, last)
        except UplinkError as err:
            raise CommandError(str(err)) from None
        return {"uplink": name, "from_seq": first, "to_seq": last, "readings": sent}

    return {
        "ping": ping,
        "status": status,
        "log_level": log_level,
        "reload": reload,
        "device.enable": enable,
        "device.disable": disable,
        "device.read": read,
        "device.write": write,
        "resend": resend,
    }


def _gone(first: int, last: int, oldest: int | None) -> None:
    """Refuse a resend whose range begins before the oldest reading still in the log."""
    if oldest is None or oldest > last:
        kept = "the log holds no reading now" if oldest is None else f"the oldest is {oldest}"
        raise CommandError(f"readings {first} to {last} are no longer in the log ({kept})")
    raise CommandError(
        f"readings {first} to {oldest - 1} are no longer in the log; "
        f"{oldest} to {last} are: ask for those"
    )


def _seq(args: Mapping[str, object], name: str) -> int:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadArgs(f'"{name}" must be a seq (an integer from 1)')
    return value


def _check_write(rules: tuple[WriteRule, ...], device: str, sensor: str, value: object) -> None:
    """A write must match a ``[[commands.writes]]`` rule, within its bounds."""
    rule = next((r for r in rules if r.device == device and r.sensor == sensor), None)
    if rule is None:
        raise BadArgs(f"writing {sensor!r} of {device!r} is not allowed here")
    if value is None or isinstance(value, dict | list):
        raise BadArgs('"value" must be a number, a boolean or a string')
    if rule.min is None and rule.max is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadArgs(f'"value" must be a number for {sensor!r} of {device!r}')
    if rule.min is not None and value < rule.min:
        raise BadArgs(f'"value" {value} is below the allowed minimum {rule.min:g}')
    if rule.max is not None and value > rule.max:
        raise BadArgs(f'"value" {value} is above the allowed maximum {rule.max:g}')


def _text(args: Mapping[str, object], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise BadArgs(f'"{name}" must be a non-empty string')
    return value


async def _from_driver(method: Callable[..., object], *args: object) -> object:
    """The driver's answer; its DriverError (the device's own reason) becomes the
    command's error, not an internal one."""
    try:
        value = method(*args)
        # Drivers may answer at once or after the device confirmed (a coroutine).
        if inspect.isawaitable(value):
            return await value
    except DriverError as err:
        raise CommandError(str(err)) from None
    return value
