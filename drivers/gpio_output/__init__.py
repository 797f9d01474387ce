"""The ``gpio_output`` driver: one digital or PWM output of a Raspberry Pi.

``settings`` declares the keys, ``transport`` drives the pin through gpiozero and
exposes ``write`` for commands.
"""

from drivers.gpio_output.settings import GpioOutputSettings
from drivers.gpio_output.transport import GpioOutputDriver
from gateway.driver_registry import DriverSpec

DRIVER = DriverSpec(
    name="gpio_output",
    settings=GpioOutputSettings,
    create=GpioOutputDriver,
    summary=(
        "One output: a relay, a contactor's coil through a driver stage, a PWM fan or "
        "dimmer; its level is a reading and `write` sets it. See "
        "[drivers.md](drivers.md#gpio_output-outputs-on-a-raspberry-pi)."
    ),
    guide="""\
```toml
[[devices]]
id = "pump-relay"
driver = "gpio_output"
pin = 23
active_high = false      # a relay board whose inputs are active low
initial = 0              # off at start and at every stop

[[devices]]
id = "fan"
driver = "gpio_output"
pin = "GPIO18"
pwm = true
frequency = 200
initial = 0.3
sensor = "duty"
```
""",
)
