"""The ``framed`` driver: binary frames (COBS or SLIP, with a CRC) from a microcontroller.

``codec`` turns frames into readings (and writes them for the simulated device in
``device``), ``transport`` reads the port, ``settings`` declares the keys and the layout.
"""

from drivers.framed.settings import FramedSettings
from drivers.framed.transport import FramedDriver
from gateway.driver_registry import DriverSpec

DRIVER = DriverSpec(
    name="framed",
    settings=FramedSettings,
    create=FramedDriver,
    summary=(
        "Binary frames from a microcontroller: fields packed as a fixed layout, a CRC, COBS "
        "or SLIP framing. See [drivers.md](drivers.md#framed-binary-frames-with-a-crc) "
        "for what is read."
    ),
    guide="""\
```toml
[[devices]]
id = "node-7"
driver = "framed"
port = "/dev/ttyACM0"
baudrate = 115200
framing = "cobs"
crc = "crc16-ccitt-false"
byte_order = "little"

[[devices.fields]]
name = "n"
type = "uint32"

[[devices.fields]]
name = "t"
type = "int16"
scale = 0.01
unit = "°C"
```
""",
)
