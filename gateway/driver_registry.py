"""The drivers this installation knows, found through the ``edge_gateway.drivers`` entry points.

A driver is a package that declares, in its distribution's metadata, an entry point in
the group ``edge_gateway.drivers`` named after its ``driver`` key and pointing to a
``DriverSpec``. The drivers shipped with the gateway are declared in pyproject.toml the
same way, so a driver in a package of its own is found like them, and the core never
imports a driver module by name: loading an entry point imports it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from gateway.errors import DriverError
from gateway.interfaces import Driver, SampleSink
from gateway.settings import DeviceSettings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "edge_gateway.drivers"


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """What the gateway needs to know of a driver."""

    # The ``driver`` key of a device section.
    name: str
    # Its settings: a subclass of DeviceSettings, tagged with ``driver = name``, whose
    # fields declare its keys (see gateway.fields).
    settings: type[DeviceSettings]
    # Builds the running driver from validated settings of that class.
    create: Callable[[Any, SampleSink], Driver]
    # One sentence for the configuration reference: what it reads.
    summary: str
    # Markdown shown after its keys in the configuration reference (an example).
    guide: str = ""


@functools.cache
def drivers() -> Mapping[str, DriverSpec]:
    """Every installed driver by name, loaded once.

    A driver whose entry point fails to load is left out with an error in the log, so
    one broken plug-in does not stop the devices of the others; a configuration naming
    it is refused with the names of those that loaded.
    """
    found: dict[str, DriverSpec] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = point.load()
        except Exception as exc:  # noqa: BLE001 - any error of a plug-in's import
            log.error("driver %r (%s) failed to load: %s", point.name, point.value, exc)
            continue
        if not isinstance(spec, DriverSpec) or spec.name != point.name:
            log.error("driver %r (%s) is not a DriverSpec of that name", point.name, point.value)
            continue
        found[spec.name] = spec
    return MappingProxyType(dict(sorted(found.items())))


def create_driver(settings: DeviceSettings, sink: SampleSink) -> Driver:
    """The driver for one configured device; DriverError for an unknown driver name."""
    spec = drivers().get(settings.driver)
    if spec is None:
        known = ", ".join(drivers())
        raise DriverError(settings.id, f"unknown driver {settings.driver!r} (known: {known})")
    if not isinstance(settings, spec.settings):
        raise DriverError(
            settings.id,
            f"{spec.name} needs {spec.settings.__name__}, not {type(settings).__name__}",
        )
    return spec.create(settings, sink)
