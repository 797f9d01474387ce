"""The running gateway: one TaskGroup tree that owns every task.

The store is opened first and closed last, so whatever a driver has read is
committed before the process exits. Drivers, uplinks and the local server are
supervised children: a SIGHUP reload restarts only those whose settings changed,
and never closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from typing import Any

from gateway import systemd_notify
from gateway.commands.builtins import RELOAD_TIMEOUT, builtin_handlers
from gateway.commands.journal import FILE_NAME as COMMANDS_FILE
from gateway.commands.journal import AnswerJournal
from gateway.commands.router import CommandError, CommandRouter
from gateway.commands.signing import load_key
from gateway.config import load_config
from gateway.driver_registry import create_driver
from gateway.errors import ConfigError, GatewayError, StoreError
from gateway.ingest import DeviceSink
from gateway.interfaces import Driver, GatewayView, Uplink
from gateway.local import rest, serve
from gateway.settings import DeviceSettings, Settings, UplinkEntry
from gateway.store import Store, schema
from gateway.uplinks.registry import UplinkContext, create_uplink
from gateway.uplinks.route import PRIORITY_SUFFIX, PriorityRules, Selection

log = logging.getLogger(__name__)

# How often the systemd STATUS= line is refreshed.
STATUS_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class UplinkChild:
    """An uplink's settings and the priorities of the devices (a change restarts it)."""

    entry: UplinkEntry
    priority: PriorityRules

    def cursors(self) -> set[str]:
        """The durable cursors it reads the log with: its name, and its priority lane's."""
        selection = Selection(self.entry.devices, self.priority)
        name = self.entry.name
        return {name, name + PRIORITY_SUFFIX} if selection.priority_devices() else {name}


@dataclass(slots=True)
class _Child:
    """A supervised task and the settings it was started with (to detect changes)."""

    task: asyncio.Task[None]
    settings: object


class Supervisor:
    """Named child tasks inside one TaskGroup, each restartable on its own."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self._children: dict[str, _Child] = {}

    def start(self, name: str, settings: object, coro: Coroutine[Any, Any, None]) -> None:
        task = self._group.create_task(coro, name=name)
        self._children[name] = _Child(task, settings)

    def settings_of(self, name: str) -> object:
        return self._children[name].settings

    def names(self, prefix: str) -> set[str]:
        return {n for n in self._children if n.startswith(prefix)}

    async def stop(self, name: str) -> None:
        child = self._children.pop(name)
        child.task.cancel()
        # The child's own cancellation is expected; anything else it raised while
        # stopping has already been logged by the child.
        with contextlib.suppress(asyncio.CancelledError):
            await child.task

    async def stop_all(self, prefix: str = "") -> None:
        for name in sorted(self.names(prefix)):
            await self.stop(name)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.drivers: dict[str, Driver] = {}
        self.uplinks: dict[str, Uplink] = {}
        self.notifier = systemd_notify.Notifier.from_environment()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        # Set by the local server once it listens: readiness waits for it.
        self._local_bound = asyncio.Event()
        # Set at each reload: the local server reads its token file and certificate again.
        self._local_reload = asyncio.Event()
        # Commands: devices stopped by device.disable (until enabled or restarted), the
        # supervisor they act through, and the end of the next reload.
        self.commands: CommandRouter | None = None
        self.view: GatewayView | None = None
        self._disabled: set[str] = set()
        self._sup: Supervisor | None = None
        self._changing = asyncio.Lock()
        self._reload_done = asyncio.Event()
        self._reload_error: str | None = None

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    async def run(self) -> int:
        data_dir = self.settings.gateway.data_dir
        # Store.open creates the directory, and says which one when it cannot.
        self.store = await Store.open(data_dir / schema.DB_NAME, self.settings.store)
        try:
            view = GatewayView(
                settings=self.settings,
                log=self.store,
                devices=self.drivers,
                uplinks=self.uplinks,
                started=time.time(),
            )
            self.view = view
            commands = self.settings.commands
            journal = AnswerJournal(
                data_dir / COMMANDS_FILE, commands.remember, commands.remember_count
            )
            await asyncio.to_thread(journal.load)
            key = await asyncio.to_thread(load_key, commands.hmac_key_file)
            self.commands = CommandRouter(
                commands,
                journal,
                builtin_handlers(self, view, lambda: self.settings.commands),
                key=key,
            )
            view.commands = self.commands
            try:
                await self._supervise(self.store, view)
            except* GatewayError as failed:
                # A part that cannot run (the local server's port taken, say) ends the
                # gateway: its own one-line error says why, not a group of tasks.
                error: BaseException = failed
                while isinstance(error, BaseExceptionGroup):
                    error = error.exceptions[0]
                raise error from None
        finally:
            # Every sample a driver handed over is committed here, before exit.
            await self.store.close()
        log.info("stopped; last committed seq %d", self.store.last_seq)
        return 0

    async def _supervise(self, store: Store, view: GatewayView) -> None:
        async with asyncio.TaskGroup() as group:
            sup = Supervisor(group)
            self._sup = sup
            await self._release_removed_uplinks(store)
            for name, child in _children_of(self.settings).items():
                self._start(sup, store, view, name, child)
            helpers = [
                group.create_task(
                    systemd_notify.watchdog(self.notifier, store.stall_reason), name="watchdog"
                ),
                group.create_task(self._report_status(view), name="status"),
                group.create_task(_end_with_store(store), name="store-watch"),
            ]
            if self.settings.local is not None:
                await self._local_bound.wait()
            # What starting built (modules, the store, the server) lives as long as the
            # process: frozen, the cyclic collector never walks it again, so a full
            # collection no longer pauses the loop for tens of milliseconds.
            gc.freeze()
            self.notifier.notify(ready=True, status=systemd_notify.status_line(view))
            log.info(
                "gateway %s running: %d device(s), uplinks: %s, local server: %s",
                self.settings.gateway.id,
                len(self.drivers),
                ", ".join(self.uplinks) or "none",
                self.settings.local.listen if self.settings.local else "off",
            )
            await self._wait_for_stop_or_reload(sup, store, view)
            # From here systemd stops watching the watchdog and allows the stop timeout.
            self.notifier.notify(stopping=True)
            # Stop reading first so nothing more arrives, then the rest.
            await sup.stop_all("device:")
            for device_id, driver in self.drivers.items():
                log.info("%s: read %d readings", device_id, driver.status.readings)
            await sup.stop_all()
            for task in helpers:
                task.cancel()

    async def _wait_for_stop_or_reload(
        self, sup: Supervisor, store: Store, view: GatewayView
    ) -> None:
        while True:
            stop = asyncio.ensure_future(self._stop.wait())
            reload = asyncio.ensure_future(self._reload.wait())
            try:
                await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                reload.cancel()
            if self._stop.is_set():
                return
            self._reload.clear()
            async with self._changing:
                await self._do_reload(sup, store, view)
            self._reload_done.set()
            self._reload_done = asyncio.Event()

    async def _do_reload(self, sup: Supervisor, store: Store, view: GatewayView) -> None:
        source = self.settings.source
        self._reload_error = None
        if source is None:
            self._reload_error = "the configuration has no file to reload from"
            log.warning("reload requested but %s", self._reload_error)
            return
        self.notifier.notify(reloading=True)
        try:
            new = await asyncio.to_thread(load_config, source)
        except ConfigError as exc:
            log.error("reload refused, still running on the previous configuration: %s", exc)
            self._reload_error = f"reload refused: {exc}"
            self.notifier.notify(ready=True, status="reload refused: bad configuration")
            return
        for what, old_value, new_value in (
            ("gateway", self.settings.gateway, new.gateway),
            ("store", self.settings.store, new.store),
        ):
            if old_value != new_value:
                log.warning("[%s] changed: takes effect at the next restart", what)
        # Gateway identity and store settings stay as they were until a restart.
        new = replace(new, gateway=self.settings.gateway, store=self.settings.store)
        self.settings = new
        if self.commands is not None:
            try:
                key = await asyncio.to_thread(load_key, new.commands.hmac_key_file)
            except (OSError, ValueError) as exc:
                # Checked when the file was read; gone since: no command runs unsigned.
                log.error("commands: cannot read the HMAC key, no command runs: %s", exc)
                new = replace(new, commands=replace(new.commands, allow=()))
                self.settings = new
                key = None
            self.commands.configure(new.commands, key)
        await self._restart_changed(sup, store, view, new)
        self._local_reload.set()
        self.notifier.notify(ready=True, status=systemd_notify.status_line(view))
        log.info("configuration reloaded from %s", source)

    async def _restart_changed(
        self, sup: Supervisor, store: Store, view: GatewayView, new: Settings
    ) -> None:
        wanted = _children_of(new, self._disabled)
        for name in sorted(sup.names("")):
            if name not in wanted or sup.settings_of(name) != wanted[name]:
                log.info("stopping %s (removed or changed)", name)
                old = sup.settings_of(name)
                await sup.stop(name)
                # The view shows running parts only; the local server has no entry.
                if isinstance(old, DeviceSettings):
                    del self.drivers[old.id]
                elif isinstance(old, UplinkChild):
                    del self.uplinks[old.entry.name]
        view.settings = new
        running = sup.names("")
        for name, child in wanted.items():
            if name not in running:
                self._start(sup, store, view, name, child)
        await self._release_removed_uplinks(store)

    async def _release_removed_uplinks(self, store: Store) -> None:
        """The cursors of uplinks (or priority lanes) no longer configured hold retention
        no more: deleted, so that one added again later starts as configured."""
        wanted: set[str] = set()
        for child in _children_of(self.settings).values():
            if isinstance(child, UplinkChild):
                wanted |= child.cursors()
        try:
            for name, seq in sorted((await store.consumers()).items()):
                if name not in wanted:
                    await store.release_consumer(name)
                    log.info("uplink cursor %s (at seq %d) released: not configured", name, seq)
        except StoreError as err:
            log.warning("could not release the cursors of removed uplinks: %s", err)

    def _start(
        self, sup: Supervisor, store: Store, view: GatewayView, name: str, child: object
    ) -> None:
        coro: Coroutine[Any, Any, None]
        if isinstance(child, DeviceSettings):
            sink = DeviceSink(store, child.id, child.transforms)
            driver = create_driver(child, sink)
            sink.status = driver.status
            self.drivers[child.id] = driver
            coro = run_device(driver, sink)
        elif isinstance(child, UplinkChild):
            context = UplinkContext(
                self.settings.gateway.id,
                store,
                store,
                self.commands,
                child.priority,
                lambda: self.settings.devices,
            )
            uplink = create_uplink(child.entry, context)
            self.uplinks[uplink.name] = uplink
            coro = uplink.run()
        else:
            self._local_bound = asyncio.Event()
            coro = serve(view, self._local_bound, self._local_reload)
        sup.start(name, child, coro)

    # What the built-in commands act on (gateway.commands.builtins.Runtime).

    def status_body(self) -> dict[str, object]:
        assert self.view is not None
        return rest.status_body(self.view, None)

    def configured_devices(self) -> set[str]:
        return {d.id for d in self.settings.devices if d.enabled}

    async def set_device_enabled(self, device: str, enabled: bool) -> bool:
        sup, store, view = self._sup, self.store, self.view
        if sup is None or store is None or view is None:
            raise CommandError("the gateway is starting")
        name = f"device:{device}"
        async with self._changing:
            running = name in sup.names(name)
            if enabled:
                self._disabled.discard(device)
                wanted = _children_of(self.settings, self._disabled)
                if running or name not in wanted:
                    return False
                log.info("%s: enabled by command", device)
                self._start(sup, store, view, name, wanted[name])
                return True
            self._disabled.add(device)
            if not running:
                return False
            log.info("%s: disabled by command", device)
            await sup.stop(name)
            del self.drivers[device]
            return True

    async def reload(self) -> None:
        done = self._reload_done
        self.request_reload()
        try:
            async with asyncio.timeout(RELOAD_TIMEOUT):
                await done.wait()
        except TimeoutError:
            raise CommandError(f"the reload did not end within {RELOAD_TIMEOUT:g}s") from None
        if self._reload_error is not None:
            raise CommandError(self._reload_error)

    async def _report_status(self, view: GatewayView) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            self.notifier.notify(status=systemd_notify.status_line(view))


async def run_device(driver: Driver, sink: DeviceSink) -> None:
    """Run ``driver``; when it stops (a stop, a reload), its sink sends what the
    transforms' open windows hold, to the store, which is still open."""
    try:
        await driver.run()
    finally:
        sink.close()


async def _end_with_store(store: Store) -> None:
    """A store whose writer thread died (a bug) accepts nothing more: end the gateway
    at once, exit 1, so the service manager restarts it (the watchdog would too, later)."""
    reason = await store.wait_failed()
    raise StoreError(f"the store stopped: {reason}")


def _children_of(settings: Settings, disabled: set[str] | None = None) -> dict[str, object]:
    """Each supervised child's name and the settings that, when changed, restart it.

    ``disabled``: devices stopped by command, left stopped."""
    off = disabled or set()
    children: dict[str, object] = {
        f"device:{d.id}": d for d in settings.devices if d.enabled and d.id not in off
    }
    priority = PriorityRules.of(settings.devices)
    for entry in settings.all_uplinks():
        children[f"uplink:{entry.name}"] = UplinkChild(entry, priority)
    if settings.local is not None:
        children["local"] = settings.local
    return children


@contextlib.contextmanager
def signals_handled(gateway: Gateway) -> Iterator[None]:
    """SIGTERM and SIGINT stop ``gateway`` cleanly; SIGHUP reloads its configuration."""
    loop = asyncio.get_running_loop()
    handlers = {
        signal.SIGTERM: gateway.request_stop,
        signal.SIGINT: gateway.request_stop,
        signal.SIGHUP: gateway.request_reload,
    }
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    try:
        yield
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)


async def run(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the configuration file."""
    gateway = Gateway(settings)
    with signals_handled(gateway):
        return await gateway.run()
