"""Example handlers for ``worker --config`` (see README, "Subscribers and handlers")."""
