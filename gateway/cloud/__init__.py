"""The cloud side, kept apart from the gateway's runtime: where delivered readings land.

The gateway itself imports nothing from here; the reference ingest server and the
tests do.
"""
