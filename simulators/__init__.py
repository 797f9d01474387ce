"""Simulated serial devices on pseudo-terminals, for development without hardware."""
