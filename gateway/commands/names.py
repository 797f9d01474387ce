"""The names of the built-in commands, as ``[commands] allow`` and the topics spell them."""

from __future__ import annotations

COMMANDS = (
    "ping",
    "status",
    "log_level",
    "reload",
    "device.enable",
    "device.disable",
    "device.read",
    "device.write",
    "resend",
)

# Commands that change nothing: running one again is harmless, so their answers are
# sent without waiting for the journal's fsync (see gateway.commands.router).
READ_ONLY = frozenset({"ping", "status"})
