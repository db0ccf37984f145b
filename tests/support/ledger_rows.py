"""Rows for tests that write the ledger's tables directly, past the streams and the
indexer: an archived webhook and a delivery attempt, each plain by default (a test names
what it varies), and the stream names their batches cover."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

STREAMS = {"webhooks": "x.archive", "attempts": "x.deliveries"}
"""The streams a directly written batch covers (``Batch.cover``), by table."""


def webhook_row(n: int, received_at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    """Webhook ``m-<n>`` of order ``n`` (``SO-<n>``) at stream offset ``n``, received
    ``received_at`` (now by default)."""
    return {
        "message_id": f"m-{n}",
        "event": "despatched",
        "order_id": str(n),
        "order_number": f"SO-{n}",
        "client_id": "12",
        "warehouse_id": "3",
        "received_at": received_at or datetime.now(UTC),
        "source": "webhook",
        "bytes": 100,
        "stream_offset": n,
    } | fields


def attempt_row(n: int, at: datetime, **fields: Any) -> dict[str, Any]:
    """A first attempt at ``at`` delivering webhook ``m-<n>`` to ``erp`` (200), record
    ``r-<n>`` at stream offset ``n``."""
    return {
        "record_id": f"r-{n}",
        "message_id": f"m-{n}",
        "subscriber": "erp",
        "event": "despatched",
        "order_id": str(n),
        "order_number": None,
        "attempt": 1,
        "outcome": "delivered",
        "status": 200,
        "answer": None,
        "error": None,
        "duration_ms": 1.0,
        "at": at,
        "source": "worker",
        "operator": None,
        "stream_offset": n,
    } | fields
