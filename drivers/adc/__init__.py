"""The ``adc`` driver: MCP3xxx analogue-to-digital converters on SPI, through gpiozero.

``settings`` declares the keys (a channel table each), ``transport`` polls the chip,
``device`` is the chip's side on gpiozero's mock SPI, for tests.
"""

from drivers.adc.settings import AdcSettings
from drivers.adc.transport import AdcDriver
from gateway.driver_registry import DriverSpec

DRIVER = DriverSpec(
    name="adc",
    settings=AdcSettings,
    create=AdcDriver,
    summary=(
        "The inputs of a Microchip MCP3xxx ADC (MCP3008 and its family) on SPI, each a "
        "sensor in volts or scaled to its unit. See "
        "[drivers.md](drivers.md#adc-mcp3xxx-analogue-inputs) for what is read."
    ),
    guide="""\
```toml
[[devices]]
id = "tank"
driver = "adc"
chip = "MCP3008"
vref = 3.3
poll_interval = "5s"

[[devices.channels]]
channel = 0
sensor = "battery"       # a 1:4 divider: volts * 4
scale = 4.0

[[devices.channels]]
channel = 1
sensor = "pressure"      # a 0.5-3.0 V transmitter for 0-10 bar
scale = 4.0
offset = -2.0
unit = "bar"
```
""",
)
