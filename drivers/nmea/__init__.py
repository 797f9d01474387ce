"""The ``nmea`` driver: a GPS (GNSS) receiver speaking NMEA 0183 on a serial port.

``codec`` turns sentences into readings (and writes them for the simulated receiver in
``device``), ``transport`` reads the port, ``settings`` declares the keys.
"""

from drivers.nmea.settings import NmeaSettings
from drivers.nmea.transport import NmeaDriver
from gateway.driver_registry import DriverSpec

DRIVER = DriverSpec(
    name="nmea",
    settings=NmeaSettings,
    create=NmeaDriver,
    summary=(
        "A GPS (GNSS) receiver speaking NMEA 0183: position, altitude, speed, course, fix "
        "quality, satellites, dilution and the receiver's UTC time. See "
        "[drivers.md](drivers.md#nmea-gps-receivers) for what is read."
    ),
    guide="""\
```toml
[[devices]]
id = "gps-1"
driver = "nmea"
port = "/dev/serial/by-id/usb-u-blox_AG_-_www.u-blox.com_u-blox_GNSS_receiver-if00"
baudrate = 9600
sentences = ["GGA", "RMC", "GSA"]
```
""",
)
