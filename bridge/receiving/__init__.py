"""The receiving side: the HTTP app, authentication, delivery to the broker or the spool,
and the drain that empties the spool. Never imports the worker side."""
