"""The drivers shipped with the gateway, one package each, with helpers they share.

Each package names a ``DriverSpec`` (``drivers.serial_line:DRIVER``) that pyproject.toml
declares as an ``edge_gateway.drivers`` entry point; the gateway finds them there
(``gateway.driver_registry``), as it finds a driver shipped in a package of its own.
"""
