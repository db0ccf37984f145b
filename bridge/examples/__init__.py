"""Example handlers for ``worker --config`` (see docs/subscribers.md)."""
