"""edge-gateway: store-and-forward edge gateway for serial and GPIO sensors."""

from importlib.metadata import PackageNotFoundError, version

# pyproject.toml is the one place the version is written.
try:
    __version__ = version("edge-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
