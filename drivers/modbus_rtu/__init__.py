"""The ``modbus_rtu`` driver: register maps of Modbus RTU slaves on a shared serial bus.

``settings`` declares the keys and the register map, ``codec`` turns register words
into values and plans the requests (pure), ``bus`` owns each port once for all its
devices, ``transport`` polls one slave, ``device`` is the simulated meter.
"""

from drivers.modbus_rtu.settings import ModbusRtuSettings
from drivers.modbus_rtu.transport import ModbusRtuDriver
from gateway.driver_registry import DriverSpec

DRIVER = DriverSpec(
    name="modbus_rtu",
    settings=ModbusRtuSettings,
    create=ModbusRtuDriver,
    summary=(
        "Modbus RTU slaves (meters, PLCs, drives) on a serial RS-485 bus, polled by register "
        "map; several devices may share a `port`. See "
        "[drivers.md](drivers.md#modbus_rtu-modbus-rtu-slaves-on-a-serial-bus) for what is read."
    ),
    guide="""\
```toml
[[devices]]
id = "meter-1"
driver = "modbus_rtu"
port = "/dev/ttyUSB0"
baudrate = 9600
slave_id = 1
poll_interval = "1s"

[[devices.registers]]
sensor = "voltage"
table = "holding"
address = 0
type = "uint16"
scale = 0.1
unit = "V"

[[devices.registers]]
sensor = "energy"
table = "holding"
address = 4
type = "uint32"
word_order = "big"
unit = "Wh"

[[devices]]
id = "meter-2"               # a second slave on the same bus
driver = "modbus_rtu"
port = "/dev/ttyUSB0"
baudrate = 9600
slave_id = 2

[[devices.registers]]
sensor = "relay"
table = "coil"
address = 0
type = "bool"
writable = true
```
""",
)
