"""The store: an append-only SQLite log of readings with one durable cursor per consumer.

See ``docs/store.md`` for the schema, the guarantees and the operator commands.
"""

from gateway.store.store import Store

__all__ = ["Store"]
