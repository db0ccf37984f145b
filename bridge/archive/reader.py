"""Finding webhooks in the archive stream ``<exchange>.archive`` by time window, order,
event and message id: a library (``archive find``, the console and the sync use it).

Exact at the window's edges: the stream positions a reader by its chunks' arrival time, in
whole seconds, so the read attaches early (a lookback, for webhooks published late from a
spool) and every message is filtered on its own ``x-received-at`` (milliseconds). The read
never stops at ``until``, since a spooled webhook can sit anywhere later in the log; it ends
by itself at the log's end (see :mod:`bridge.archive.end`).

Fails with :class:`CommandError` (missing archive, broker not answering, incomplete read)
or :class:`~bridge.amqp.connection.BrokerUnreachable`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiormq.abc import AbstractConnection, DeliveredMessage
from pamqp.commands import Basic

from bridge.amqp.connection import Brokers, borrow
from bridge.amqp.topology import archive_name
from bridge.archive.end import (
    IDLE,
    PREFETCH,
    STREAM_OFFSET_HEADER,
    StreamOffset,
    read_to_end,
    require_stream,
)
from bridge.archive.window import parse_received_at
from bridge.core.contract import (
    HEADER_EVENT,
    HEADER_ORDER_ID,
    HEADER_ORDER_NUMBER,
    HEADER_RECEIVED_AT,
    HEADER_SOURCE,
)

LOOKBACK = timedelta(hours=1)
"""How far before ``since`` a read attaches: a webhook spooled during a broker outage is
appended when the broker is back, after newer ones; one held longer than this is missed."""
ATTACH_MARGIN = timedelta(minutes=5)
"""A read never attaches later than this before now, so a client clock ahead of the
broker's cannot attach it past its own end marker."""
EARLIEST_ATTACH = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
QUARANTINED = "invalid"
"""The event filter value that selects quarantined (non-JSON) bodies."""


@dataclass(frozen=True)
class ArchiveQuery:
    since: datetime  # inclusive, aware UTC
    until: datetime  # exclusive, aware UTC
    order_id: str | None = None
    order_number: str | None = None
    events: tuple[str, ...] = ()  # empty: all (four events and quarantined "invalid" ones)
    message_id: str | None = None


@dataclass(frozen=True)
class ArchivedWebhook:
    offset: int  # stream offset
    received_at: datetime  # from x-received-at (ms precision), aware UTC
    event: str
    routing_key: str  # order.<event> or invalid.<event>
    message_id: str
    order_id: str | None
    order_number: str | None
    source: str  # "webhook", or the x-source header ("reconcile")
    size: int  # body bytes
    headers: dict[str, Any]
    properties: Basic.Properties
    body: bytes

    @property
    def quarantined(self) -> bool:
        return self.routing_key.startswith(QUARANTINED + ".")


@dataclass
class Seen:
    """What a read went through: the webhooks received in its query's window, whether they
    matched its filters or not (how much a lookup that found nothing searched)."""

    in_window: int = 0

    def saw(self, query: ArchiveQuery, webhook: ArchivedWebhook) -> None:
        if query.since <= webhook.received_at < query.until:
            self.in_window += 1


def attach_point(since: datetime, now: datetime, lookback: timedelta = LOOKBACK) -> datetime:
    """Where a read for ``since`` attaches: ``lookback`` earlier, never later than
    ``ATTACH_MARGIN`` before now, never before 1970 (a stream's attach time is Unix seconds:
    an earlier one cannot even be sent, and a ``since`` of 100 years ago means "all")."""
    if since - EARLIEST_ATTACH <= lookback:
        return EARLIEST_ATTACH
    return max(EARLIEST_ATTACH, min(since - lookback, now - ATTACH_MARGIN))


def header_text(value: Any) -> str | None:
    """A header's value as text (AMQP hands strings over as bytes), ``None`` when absent."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def copy_properties(properties: Basic.Properties, headers: dict[str, Any]) -> Basic.Properties:
    """``properties`` with every field kept and ``headers`` in place of its own."""
    fields = {name: getattr(properties, name) for name in Basic.Properties.__slots__}
    fields["headers"] = headers
    return Basic.Properties(**fields)


def archived(message: DeliveredMessage) -> ArchivedWebhook | None:
    """The webhook a stream delivery holds, its stream offset header taken out; ``None``
    for a message without a time of its own (not one the bridge published)."""
    properties = message.header.properties
    headers = dict(properties.headers or {})
    offset = headers.pop(STREAM_OFFSET_HEADER, -1)
    received_at = parse_received_at(headers.get(HEADER_RECEIVED_AT))
    if received_at is None and properties.timestamp is not None:
        stamp = properties.timestamp
        received_at = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    if received_at is None:
        return None
    routing_key = message.routing_key or ""
    event = header_text(headers.get(HEADER_EVENT)) or properties.message_type or routing_key
    kept = copy_properties(properties, headers)
    return ArchivedWebhook(
        offset=offset if isinstance(offset, int) else -1,
        received_at=received_at.astimezone(UTC),
        event=event,
        routing_key=routing_key,
        message_id=properties.message_id or "",
        order_id=header_text(headers.get(HEADER_ORDER_ID)),
        order_number=header_text(headers.get(HEADER_ORDER_NUMBER)),
        source=header_text(headers.get(HEADER_SOURCE)) or "webhook",
        size=len(message.body),
        headers=headers,
        properties=kept,
        body=bytes(message.body),
    )


def matches(query: ArchiveQuery, webhook: ArchivedWebhook) -> bool:
    """Whether ``webhook`` is in ``query``'s window and passes each of its filters."""
    if not query.since <= webhook.received_at < query.until:
        return False
    if query.events:
        wanted = QUARANTINED if webhook.quarantined else webhook.event
        if wanted not in query.events:
            return False
    if query.order_id is not None and webhook.order_id != query.order_id:
        return False
    if query.order_number is not None and webhook.order_number != query.order_number:
        return False
    return query.message_id is None or webhook.message_id == query.message_id


async def scan(
    connection: AbstractConnection,
    exchange: str,
    query: ArchiveQuery,
    *,
    start: StreamOffset | None = None,
    prefetch: int = PREFETCH,
    idle: float = IDLE,
    read_only: bool = False,
    seen: Seen | None = None,
) -> AsyncGenerator[ArchivedWebhook, None]:
    """The matches of ``query`` on an open connection (one the caller keeps to itself:
    a mistake on a stream closes the whole connection). ``read_only`` writes nothing into
    the stream (:func:`~bridge.archive.end.read_to_end`, ``writes=False``: for a GET), at
    the cost of exactness for what is appended while it reads. ``seen`` counts what it
    went through."""
    stream = archive_name(exchange)
    await require_stream(connection, stream)
    where = start if start is not None else attach_point(query.since, datetime.now(UTC))
    reading = read_to_end(
        connection, stream, where, prefetch=prefetch, idle=idle, writes=not read_only
    )
    async with contextlib.aclosing(reading):
        async for message in reading:
            webhook = archived(message)
            if webhook is None:
                continue
            if seen is not None:
                seen.saw(query, webhook)
            if matches(query, webhook):
                yield webhook


async def find(
    broker: Brokers,
    exchange: str,
    query: ArchiveQuery,
    *,
    read_only: bool = False,
    seen: Seen | None = None,
) -> AsyncGenerator[ArchivedWebhook, None]:
    """Every archived webhook matching ``query``, oldest first; ends by itself at the end
    of the log (``read_only``, ``seen``: see :func:`scan`). Raises :class:`CommandError` if
    the archive is missing. A caller that stops early closes it (``contextlib.aclosing``):
    on a lent connection, its stream consumer is only cancelled then."""
    lease = await borrow(broker)
    found = scan(lease.connection, exchange, query, read_only=read_only, seen=seen)
    try:
        async for webhook in found:
            yield webhook
    finally:
        await found.aclose()
        await lease.release()
