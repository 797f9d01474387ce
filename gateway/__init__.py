"""edge-gateway: store-and-forward edge gateway for serial and GPIO sensors."""

__version__ = "0.1.0"
