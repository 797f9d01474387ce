"""The ``gpio_input`` driver: one digital input of a Raspberry Pi.

``codec`` debounces and counts (pure), ``transport`` reads the pin through gpiozero,
``settings`` declares the keys.
"""

from drivers.gpio_input.settings import GpioInputSettings
from drivers.gpio_input.transport import GpioInputDriver
from gateway.driver_registry import DriverSpec

DRIVER = DriverSpec(
    name="gpio_input",
    settings=GpioInputSettings,
    create=GpioInputDriver,
    summary=(
        "One digital input: a door contact, a relay's \"running\" contact, a meter's pulse "
        "output. See [drivers.md](drivers.md#gpio_input-digital-inputs-on-a-raspberry-pi) "
        "for what is read and when."
    ),
    guide="""\
```toml
[[devices]]
id = "door-1"
driver = "gpio_input"
pin = 17                 # BCM 17, the header's pin 11; contact between it and GND
bounce = "20ms"
sample_interval = "5m"

[[devices]]
id = "water-meter"
driver = "gpio_input"
pin = "GPIO27"
mode = "counter"
bounce = "1ms"
sample_interval = "1m"
expected_interval = "1m"
sensor = "water"
units = { water = "pulses", water_rate = "1/s" }
```
""",
)
