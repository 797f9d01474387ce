"""The ``gpio_input`` driver: one digital input of a Raspberry Pi."""
