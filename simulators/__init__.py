"""Simulated serial devices on pseudo-terminals, for development without hardware."""

from simulators.pty_device import PtyDevice

__all__ = ["PtyDevice"]
