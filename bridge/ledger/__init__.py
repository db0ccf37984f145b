"""The delivery ledger (contract section 10): a database view of the two streams
``<exchange>.archive`` (every webhook) and ``<exchange>.deliveries`` (every delivery attempt),
kept by one indexer (``mintsoft-bridge ledger``) and read by ``trace``, the console and sync.

The streams are the log; the database is rebuilt from the offsets it stores with its rows.
"""
