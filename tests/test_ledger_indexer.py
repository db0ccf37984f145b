"""The indexer on the real broker and both databases: every archived webhook and every
delivery record becomes one row, offsets are stored with the rows, malformed messages are
counted and skipped, and a restart reads on where the last one stopped."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from bridge.core.records import Outcome, deliveries_stream
from bridge.ledger.database import open_writer
from bridge.ledger.schema import attempts, stream_offsets, webhooks
from tests.support.ledger_index import count, current, indexing, wait_for
from tests.support.ledger_streams import (
    Streams,
    record,
    webhook_headers,
)


async def test_webhooks_and_records_become_rows_once(
    ledger_db: str, exchange: str, streams: Streams
) -> None:
    engine = open_writer(ledger_db)
    for n in range(30):
        await streams.webhook(f"msg-{n}", webhook_headers(str(1000 + n)))
    await streams.records(record(f"msg-{n}", order_id=str(1000 + n)) for n in range(40))
    await streams.raw_record(b"{not json")
    await streams.raw_record(b'{"v": 1, "record_id": ""}')
    published = datetime.now(UTC)
    async with indexing(engine, exchange, ledger_db, batch_rows=7):
        await wait_for(lambda: count(engine, webhooks) == 30 and count(engine, attempts) == 40)
        # Idle and attached, it records that it holds everything appended until now.
        await wait_for(lambda: (current(engine, exchange + ".archive") or published) > published)
    with engine.connect() as connection:
        rows = {r.stream: r for r in connection.execute(select(stream_offsets))}
    deliveries = rows[deliveries_stream(exchange)]
    assert deliveries.malformed == 2 and deliveries.last_offset == 41
    assert rows[exchange + ".archive"].last_offset == 29
    assert sum(r.duplicates for r in rows.values()) == 0

    # A second indexer reads on from the stored offsets: only the new messages.
    await streams.records(record(f"msg-{n}", Outcome.FAILED, status=500) for n in range(5))
    await streams.webhook("msg-late", webhook_headers("2000"))
    async with indexing(engine, exchange, ledger_db):
        await wait_for(lambda: count(engine, attempts) == 45 and count(engine, webhooks) == 31)
    with engine.connect() as connection:
        assert connection.execute(select(func.sum(stream_offsets.c.duplicates))).scalar() == 0
    engine.dispose()


async def test_a_webhook_row_keeps_what_the_archive_says(
    ledger_db: str, exchange: str, streams: Streams
) -> None:
    engine = open_writer(ledger_db)
    await streams.webhook(
        "msg-r",
        webhook_headers("555", event="cancelled", source="reconcile", client_id="7"),
        b'{"ID": 555}',
    )
    async with indexing(engine, exchange, ledger_db):
        await wait_for(lambda: count(engine, webhooks) == 1)
    with engine.connect() as connection:
        row = connection.execute(select(webhooks)).one()
    assert (row.message_id, row.event, row.order_id, row.order_number) == (
        "msg-r",
        "cancelled",
        "555",
        "SO-555",
    )
    assert (row.source, row.client_id, row.warehouse_id, row.bytes) == ("reconcile", "7", "3", 11)
    engine.dispose()
