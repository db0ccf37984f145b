"""The ledger's tables, one definition for SQLite and PostgreSQL (SQLAlchemy Core).

- ``webhooks``: one row per webhook in the archive stream, unique by ``message_id``;
- ``attempts``: one row per delivery record, unique by ``record_id``;
- ``audit``: one row per audit record (an operator's change, from the console or the command
  line), unique by ``audit_id``; from the deliveries stream too (schema version 2);
- ``subscribers``: the subscribers ``ledger --config`` knows, with their events and filters
  (what makes a webhook "not for" one) and their oldest undelivered webhook;
- ``stream_offsets``: per stream, the last offset written, and what was skipped; written in
  the same transaction as the rows it covers;
- ``ledger_schema``: the schema version (see :mod:`bridge.ledger.migrations`).

Times are ``timestamp with time zone`` on PostgreSQL; SQLite keeps them as text without the
zone, always UTC (:func:`bridge.ledger.rows.utc` puts the zone back on reading).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# BigInteger is INTEGER PRIMARY KEY (the rowid) on SQLite only as Integer: an autoincrementing
# key there must be "INTEGER", so the variant keeps both databases' natural key.
_ID = BigInteger().with_variant(Integer(), "sqlite")


def _webhook_columns() -> tuple[Column[str], ...]:
    """What a row says of its webhook besides its message id, in ``webhooks`` and in
    ``attempts`` alike (a column object belongs to one table: new ones each call)."""
    return (
        Column("event", String(40), nullable=False),
        Column("order_id", String(64)),
        Column("order_number", String(200)),
    )


webhooks = Table(
    "webhooks",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("message_id", String(200), nullable=False, unique=True),
    *_webhook_columns(),
    Column("client_id", String(64)),
    Column("warehouse_id", String(64)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("source", String(40), nullable=False),  # webhook, reconcile, replay
    Column("bytes", Integer, nullable=False),
    Column("stream_offset", BigInteger, nullable=False),
    Index("webhooks_order_id", "order_id"),
    Index("webhooks_order_number", "order_number"),
    Index("webhooks_received_at", "received_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("record_id", String(64), nullable=False, unique=True),
    Column("message_id", String(200), nullable=False),
    Column("subscriber", String(200), nullable=False),
    *_webhook_columns(),
    Column("attempt", Integer, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("status", Integer),
    Column("answer", Text),
    Column("error", Text),
    Column("duration_ms", Float),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("source", String(40), nullable=False),
    Column("operator", String(200)),
    Column("stream_offset", BigInteger, nullable=False),
    # Version 3: for ``throttled``, the seconds the subscriber pauses (its target's
    # Retry-After): the console's "throttled until".
    Column("retry_after", Float),
    # (message id, subscriber): a webhook's attempts, and one subscriber's of them, which
    # the undelivered gauge asks per webhook (a plan through (subscriber, at) scans).
    Index("attempts_message_id", "message_id", "subscriber"),
    Index("attempts_order_id", "order_id"),
    Index("attempts_subscriber_at", "subscriber", "at"),
    Index("attempts_at", "at"),
    # Version 3: a subscriber's latest (or first) attempt of one outcome, and its attempts
    # per outcome over the last hour, each a seek (the console's subscriber figures): through
    # (subscriber, at) a last delivery behind a day of failures would be a long walk.
    Index("attempts_subscriber_outcome_at", "subscriber", "outcome", "at"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("audit_id", String(64), nullable=False, unique=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("operator", String(200), nullable=False),
    Column("via", String(20), nullable=False),  # console, cli
    Column("action", String(40), nullable=False),
    Column("subscriber", String(200), nullable=False),
    Column("count", Integer),
    Column("detail", Text),
    Column("stream_offset", BigInteger, nullable=False),
    # /audit: newest first, a page at a time.
    Index("audit_at", "at", "id"),
)
"""Added in schema version 2 (:mod:`bridge.ledger.migrations`)."""

subscribers = Table(
    "subscribers",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("events", Text, nullable=False),  # JSON list
    Column("clients", Text, nullable=False),  # JSON list; empty: every client
    Column("warehouses", Text, nullable=False),  # JSON list; empty: every warehouse
    # When the ledger first knew it: older webhooks never count as undelivered for it.
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Version 3: what the indexer's last undelivered pass found (the gauge
    # bridge_undelivered_oldest_seconds, kept here for the console): the receive time of the
    # oldest webhook not settled (NULL: none), and when that pass ran (NULL: none yet).
    Column("undelivered_oldest", DateTime(timezone=True)),
    Column("undelivered_at", DateTime(timezone=True)),
)

stream_offsets = Table(
    "stream_offsets",
    metadata,
    Column("stream", String(300), primary_key=True),
    Column("last_offset", BigInteger, nullable=False),
    # Rows the unique keys turned away: 0 unless offsets were not kept with their rows.
    Column("duplicates", BigInteger, nullable=False, default=0),
    Column("malformed", BigInteger, nullable=False, default=0),
    # Every message the stream had before this time is in the ledger (the newest written
    # message's time while busy, now while idle): what sync checks before trusting it.
    Column("current_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

ledger_schema = Table(
    "ledger_schema",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("version", Integer, nullable=False),
)
