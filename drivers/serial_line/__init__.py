"""The ``serial_line`` driver: text lines on a serial port.

``codec`` turns bytes into readings (and ``device`` writes what simulated devices
send), ``transport`` reads the port, ``settings`` declares the keys.
"""

from drivers.serial_line.settings import SerialLineSettings
from drivers.serial_line.transport import SerialLineDriver
from gateway.driver_registry import DriverSpec

DRIVER = DriverSpec(
    name="serial_line",
    settings=SerialLineSettings,
    create=SerialLineDriver,
    summary=(
        "Text lines on a serial port, one record per line, decoded by `format`. See "
        "[drivers.md](drivers.md#serial_line-one-record-per-line) for what is read."
    ),
    guide="""\
```toml
[[devices]]
id = "thermo-1"
driver = "serial_line"
port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
baudrate = 9600
format = "kv"
units = { t = "°C", h = "%" }
expected_interval = "10s"

[[devices]]
id = "power-meter"
driver = "serial_line"
port = "/dev/ttyAMA0"
baudrate = 115200
format = "csv"
columns = ["voltage", "current", "power"]
```
""",
)
