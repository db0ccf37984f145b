"""Feeding the ledger's two streams directly: archived webhooks into ``<exchange>.archive``
and delivery and audit records into ``<exchange>.deliveries``, each published with a confirm, as the
receiver and the worker would (bridge/core/records.py is the record's one definition).

Tests of the indexer produce records here (the worker's own are in tests/test_ledger_worker.py);
the streams are declared with the archive's arguments, as ``topology`` and the indexer
declare them."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiormq
import orjson
from pamqp.commands import Basic

from bridge.amqp.topology import ArchiveRetention, archive_name, declare, receiver_topology
from bridge.core.audit import AUDIT_TYPE, AuditRecord
from bridge.core.contract import (
    HEADER_CLIENT_ID,
    HEADER_EVENT,
    HEADER_ORDER_ID,
    HEADER_ORDER_NUMBER,
    HEADER_RECEIVED_AT,
    HEADER_SOURCE,
    HEADER_WAREHOUSE_ID,
    rfc3339,
)
from bridge.core.records import (
    RECORD_SEPARATOR,
    RECORD_TYPE,
    DeliveryRecord,
    Outcome,
    Source,
    deliveries_stream,
    new_record_id,
    now_rfc3339,
)
from bridge.core.settings import Settings

_numbers = itertools.count(1)


def record(
    message_id: str,
    outcome: Outcome = Outcome.DELIVERED,
    *,
    subscriber: str = "erp",
    attempt: int = 1,
    status: int | None = 200,
    order_id: str | None = None,
    event: str = "despatched",
    error: str | None = None,
    answer: str | None = None,
    source: Source = Source.WORKER,
    at: str | None = None,
) -> DeliveryRecord:
    return DeliveryRecord(
        record_id=new_record_id(),
        message_id=message_id,
        subscriber=subscriber,
        event=event,
        order_id=order_id,
        order_number=None,
        attempt=attempt,
        outcome=outcome,
        status=status,
        answer=answer,
        error=error,
        duration_ms=3.5,
        at=at or now_rfc3339(),
        source=source,
        operator=None,
    )


def webhook_headers(
    order_id: str,
    *,
    event: str = "despatched",
    order_number: str | None = None,
    client_id: str | None = "12",
    warehouse_id: str | None = "3",
    source: str | None = None,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    headers: dict[str, Any] = {
        HEADER_EVENT: event,
        HEADER_RECEIVED_AT: rfc3339((received_at or datetime.now(UTC)).timestamp()),
        HEADER_ORDER_ID: order_id,
        HEADER_ORDER_NUMBER: order_number or f"SO-{order_id}",
    }
    if client_id is not None:
        headers[HEADER_CLIENT_ID] = client_id
    if warehouse_id is not None:
        headers[HEADER_WAREHOUSE_ID] = warehouse_id
    if source is not None:
        headers[HEADER_SOURCE] = source
    return headers


def settings_for(exchange: str, amqp_url: str, ledger_url: str, **more: Any) -> Settings:
    return Settings(amqp_urls=(amqp_url,), exchange=exchange, ledger_url=ledger_url, **more)


class Streams:
    """A confirm channel on a broker, publishing into one exchange's two streams."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.connection: aiormq.abc.AbstractConnection | None = None
        self.channel: aiormq.abc.AbstractChannel | None = None

    async def open(self) -> Streams:
        self.connection = await aiormq.connect(self.amqp_url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        retention = ArchiveRetention()  # the settings' defaults, as serve declares them
        await declare(self.channel, receiver_topology(self.exchange, retention, retention))
        return self

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def _publish(self, stream: str, body: bytes, properties: Basic.Properties) -> None:
        assert self.channel is not None
        confirm = await self.channel.basic_publish(
            body, exchange="", routing_key=stream, properties=properties
        )
        assert isinstance(confirm, Basic.Ack), confirm

    async def webhook(self, message_id: str, headers: dict[str, Any], body: bytes = b"{}") -> None:
        """An archived webhook, as the receiver publishes it (straight into the stream)."""
        properties = Basic.Properties(
            message_id=message_id,
            headers=headers,
            content_type="application/json",
            delivery_mode=2,
            message_type=str(headers.get(HEADER_EVENT)),
            timestamp=datetime.now(UTC),
        )
        await self._publish(archive_name(self.exchange), body, properties)

    async def records(self, records: Iterable[DeliveryRecord]) -> None:
        for one in records:
            await self.raw_record(one.to_body(), one.record_id)

    async def record_runs(self, runs: Iterable[Sequence[DeliveryRecord]]) -> None:
        """Each run as one message, as the worker publishes the records of one loop turn:
        the records' bodies joined by newlines, the first record's id as message id."""
        for run in runs:
            body = RECORD_SEPARATOR.join(one.to_body() for one in run)
            await self.raw_record(body, run[0].record_id)

    async def audits(self, records: Iterable[AuditRecord]) -> None:
        for one in records:
            await self.raw_record(one.to_body(), one.audit_id, AUDIT_TYPE)

    async def raw_record(
        self, body: bytes, record_id: str | None = None, message_type: str = RECORD_TYPE
    ) -> None:
        """A body on the deliveries stream: a delivery or audit record (by ``message_type``),
        or anything a test wants malformed."""
        properties = Basic.Properties(
            message_id=record_id or new_record_id(),
            content_type="application/json",
            delivery_mode=2,
            message_type=message_type,
            app_id="mintsoft-bridge",
            timestamp=datetime.now(UTC),
        )
        await self._publish(deliveries_stream(self.exchange), body, properties)


def stream_names(exchange: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Everything :meth:`Streams.open` declares, for cleanup."""
    queues = (
        exchange + ".unrouted",
        exchange + ".invalid",
        archive_name(exchange),
        deliveries_stream(exchange),
    )
    return queues, (exchange, exchange + ".unrouted")


def unique_order() -> str:
    return str(900_000 + next(_numbers))


def bodies(n: int) -> Sequence[bytes]:
    return [orjson.dumps({"n": i}) for i in range(n)]
