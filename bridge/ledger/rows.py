"""Stream messages as ledger rows: a webhook of ``<exchange>.archive`` as a ``webhooks`` row,
a delivery record of ``<exchange>.deliveries`` as an ``attempts`` row, an audit record of the
same stream (AMQP ``type`` :data:`~bridge.core.audit.AUDIT_TYPE`) as an ``audit`` row. Pure
functions.

A message that is not a row is :data:`SKIP` (an end-of-read sentinel some reader appended)
or raises :class:`~bridge.core.records.RecordError` (malformed: the indexer counts it and
goes on; one bad message never stops the ledger).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from aiormq.abc import DeliveredMessage

from bridge.archive.end import offset_of, sentinel_of
from bridge.archive.reader import QUARANTINED, archived, header_text
from bridge.core.audit import AUDIT_TYPE, AuditRecord
from bridge.core.contract import HEADER_CLIENT_ID, HEADER_WAREHOUSE_ID
from bridge.core.records import DeliveryRecord, RecordError

Row = dict[str, Any]
SKIP: Final = None


def utc(value: datetime) -> datetime:
    """An aware UTC datetime (SQLite hands times back without their zone; they are UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time as an aware UTC datetime; :class:`RecordError` when it is not one."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"{text!r} is not an RFC 3339 time") from None
    return utc(parsed)


def stream_offset(message: DeliveredMessage) -> int:
    """The message's offset in its stream (the broker adds it to every stream delivery)."""
    offset = offset_of(message)
    if offset < 0:
        raise RecordError("a stream delivery without its x-stream-offset header")
    return offset


def webhook_row(message: DeliveredMessage) -> Row | None:
    """The ``webhooks`` row of an archive message; :data:`SKIP` for a sentinel."""
    if sentinel_of(message) is not None:
        return SKIP
    webhook = archived(message)
    if webhook is None or not webhook.message_id:
        raise RecordError("an archive message without a message id or a time")
    return {
        "message_id": webhook.message_id,
        "event": QUARANTINED if webhook.quarantined else webhook.event,
        "order_id": webhook.order_id,
        "order_number": webhook.order_number,
        "client_id": header_text(webhook.headers.get(HEADER_CLIENT_ID)),
        "warehouse_id": header_text(webhook.headers.get(HEADER_WAREHOUSE_ID)),
        "received_at": webhook.received_at,
        "source": webhook.source,
        "bytes": webhook.size,
        "stream_offset": webhook.offset,
    }


def attempt_row(record: DeliveryRecord, offset: int) -> Row:
    """The ``attempts`` row of a delivery record at ``offset`` of the deliveries stream."""
    return {
        "record_id": record.record_id,
        "message_id": record.message_id,
        "subscriber": record.subscriber,
        "event": record.event,
        "order_id": record.order_id,
        "order_number": record.order_number,
        "attempt": record.attempt,
        "outcome": str(record.outcome),
        "status": record.status,
        "answer": record.answer,
        "error": record.error,
        "duration_ms": record.duration_ms,
        "at": parse_time(record.at),
        "source": str(record.source),
        "operator": record.operator,
        "stream_offset": offset,
    }


def audit_row(record: AuditRecord, offset: int) -> Row:
    """The ``audit`` row of an audit record at ``offset`` of the deliveries stream."""
    return {
        "audit_id": record.audit_id,
        "at": parse_time(record.at),
        "operator": record.operator,
        "via": str(record.via),
        "action": str(record.action),
        "subscriber": record.subscriber,
        "count": record.count,
        "detail": record.detail,
        "stream_offset": offset,
    }


def deliveries_row(message: DeliveredMessage) -> tuple[str, Row] | None:
    """A deliveries-stream message as ``("attempts", row)`` or ``("audit", row)``;
    :data:`SKIP` for a sentinel."""
    if sentinel_of(message) is not None:
        return SKIP
    body = bytes(message.body)
    if message.header.properties.message_type == AUDIT_TYPE:
        return "audit", audit_row(AuditRecord.from_body(body), stream_offset(message))
    return "attempts", attempt_row(DeliveryRecord.from_body(body), stream_offset(message))


def archive_row(message: DeliveredMessage) -> tuple[str, Row] | None:
    """An archive message as ``("webhooks", row)``; :data:`SKIP` for a sentinel."""
    row = webhook_row(message)
    return SKIP if row is None else ("webhooks", row)
