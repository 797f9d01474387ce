"""The ``serial_line`` driver: text lines on a serial port."""
