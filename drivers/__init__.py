"""Device drivers: a pure codec per protocol and a transport that feeds it.

``DRIVERS`` maps the ``driver`` key of a device's configuration to the factory that
builds its driver; ``create_driver`` is what the gateway calls for each device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from drivers.gpio_input.transport import GpioInputDriver
from drivers.serial_line.transport import SerialLineDriver
from gateway.errors import DriverError
from gateway.interfaces import Driver, SampleSink
from gateway.settings import DeviceSettings

DriverFactory = Callable[[DeviceSettings, SampleSink], Driver]

DRIVERS: Mapping[str, DriverFactory] = MappingProxyType(
    {
        "serial_line": SerialLineDriver,
        "gpio_input": GpioInputDriver,
    }
)


def create_driver(settings: DeviceSettings, sink: SampleSink) -> Driver:
    """The driver for one configured device; DriverError for an unknown driver name."""
    factory = DRIVERS.get(settings.driver)
    if factory is None:
        known = ", ".join(sorted(DRIVERS))
        raise DriverError(settings.id, f"unknown driver {settings.driver!r} (known: {known})")
    return factory(settings, sink)
