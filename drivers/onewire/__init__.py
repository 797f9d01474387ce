"""The ``onewire`` driver: 1-Wire temperature probes (DS18B20 and friends) from sysfs.

``codec`` reads (and, for the simulator, writes) the kernel's files, ``transport``
polls the tree off the event loop, ``device`` writes such a tree in a folder,
``settings`` declares the keys.
"""

from drivers.onewire.settings import OneWireSettings
from drivers.onewire.transport import OneWireDriver
from gateway.driver_registry import DriverSpec

DRIVER = DriverSpec(
    name="onewire",
    settings=OneWireSettings,
    create=OneWireDriver,
    summary=(
        "1-Wire temperature probes (DS18B20, DS18S20, DS1822, MAX31850) on the kernel's w1 "
        "bus, every probe a sensor. See "
        "[drivers.md](drivers.md#onewire-1-wire-temperature-probes) for what is read."
    ),
    guide="""\
```toml
[[devices]]
id = "boiler-room"
driver = "onewire"
poll_interval = "30s"
names = { "28-0316a2799bff" = "flow", "28-0416b3a1c2ff" = "return" }
```
""",
)
