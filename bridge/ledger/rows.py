"""Stream messages as ledger rows: a webhook of ``<exchange>.archive`` as a ``webhooks`` row,
each delivery record of a ``<exchange>.deliveries`` message (one or several,
:func:`~bridge.core.records.record_lines`) as an ``attempts`` row, an audit record of the
same stream (AMQP ``type`` :data:`~bridge.core.audit.AUDIT_TYPE`, one a message) as an
``audit`` row. Pure functions.

A message that is not a row is :data:`SKIP` (an end-of-read sentinel some reader appended)
or raises :class:`~bridge.core.records.RecordError` (malformed: the indexer counts it and
goes on; one bad message never stops the ledger); :func:`deliveries_rows` gives the error of
each malformed record in its place, beside the rows of the others.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from bridge.archive.reader import QUARANTINED, header_text
from bridge.archive.window import parse_received_at
from bridge.core.audit import AUDIT_TYPE, AuditRecord
from bridge.core.contract import (
    HEADER_ARCHIVE_SENTINEL,
    HEADER_CLIENT_ID,
    HEADER_EVENT,
    HEADER_ORDER_ID,
    HEADER_ORDER_NUMBER,
    HEADER_RECEIVED_AT,
    HEADER_SOURCE,
    HEADER_WAREHOUSE_ID,
)
from bridge.core.records import DeliveryRecord, RecordError, record_lines
from bridge.ledger.deliveries_wire import Delivery

Row = dict[str, Any]
SKIP: Final = None
Found = tuple[str, Row] | RecordError
"""One row of a message, as ``(table, row)``, or why one record of it is malformed."""


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


def webhook_row(delivery: Delivery) -> Row | None:
    """The ``webhooks`` row of an archive message; :data:`SKIP` for a sentinel. The same
    reading as :func:`bridge.archive.reader.archived` (the archive's own reader)."""
    headers = delivery.headers
    if headers.get(HEADER_ARCHIVE_SENTINEL) is not None:
        return SKIP
    received_at = parse_received_at(headers.get(HEADER_RECEIVED_AT))
    if received_at is None:
        received_at = delivery.timestamp
    if received_at is None or not delivery.message_id:
        raise RecordError("an archive message without a message id or a time")
    routing_key = delivery.routing_key
    if routing_key.startswith(QUARANTINED + "."):
        event = QUARANTINED
    else:
        event = header_text(headers.get(HEADER_EVENT)) or delivery.type or routing_key
    return {
        "message_id": delivery.message_id,
        "event": event,
        "order_id": header_text(headers.get(HEADER_ORDER_ID)),
        "order_number": header_text(headers.get(HEADER_ORDER_NUMBER)),
        "client_id": header_text(headers.get(HEADER_CLIENT_ID)),
        "warehouse_id": header_text(headers.get(HEADER_WAREHOUSE_ID)),
        "received_at": utc(received_at),
        "source": header_text(headers.get(HEADER_SOURCE)) or "webhook",
        "bytes": len(delivery.body),
        "stream_offset": delivery.offset,
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
        "retry_after": record.retry_after,
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


def deliveries_rows(delivery: Delivery) -> list[Found]:
    """A deliveries-stream message as its rows, in order: ``("attempts", row)`` for each
    delivery record, ``("audit", row)`` for an audit record, a :class:`RecordError` in
    place of each malformed one; none for a sentinel."""
    if delivery.headers.get(HEADER_ARCHIVE_SENTINEL) is not None:
        return []
    offset = delivery.offset
    if delivery.type == AUDIT_TYPE:
        try:
            return [("audit", audit_row(AuditRecord.from_body(delivery.body), offset))]
        except RecordError as exc:
            return [exc]
    rows: list[Found] = []
    for line in record_lines(delivery.body):
        try:
            rows.append(("attempts", attempt_row(DeliveryRecord.from_body(line), offset)))
        except RecordError as exc:
            rows.append(exc)
    return rows


def archive_rows(delivery: Delivery) -> list[Found]:
    """An archive message as ``[("webhooks", row)]``, ``[RecordError]`` when malformed;
    none for a sentinel."""
    try:
        row = webhook_row(delivery)
    except RecordError as exc:
        return [exc]
    return [] if row is None else [("webhooks", row)]
