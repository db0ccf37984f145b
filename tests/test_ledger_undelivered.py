"""``bridge_undelivered_oldest_seconds{subscriber}`` as the ledger process computes it, on the
real broker and both databases: the age of the oldest webhook a subscriber takes (its events
and client filter) that is neither delivered, dead-lettered nor discarded; 0 once every one
is settled. Each pass is also kept in the ``subscribers`` table, where the console reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update

from bridge.core import metrics
from bridge.core.records import Outcome
from bridge.ledger.database import open_writer
from bridge.ledger.rows import utc
from bridge.ledger.schema import attempts, subscribers, webhooks
from bridge.ledger.store import SubscriberSpec, store_subscribers
from tests.support.ledger_index import count, indexing, wait_for
from tests.support.ledger_streams import Streams, record, unique_order, webhook_headers


def gauge(name: str) -> float:
    return float(metrics.UNDELIVERED_OLDEST.labels(name)._value.get())


def stored(engine: Engine, name: str) -> tuple[datetime | None, datetime | None]:
    with engine.connect() as connection:
        row = connection.execute(
            select(subscribers.c.undelivered_oldest, subscribers.c.undelivered_at).where(
                subscribers.c.name == name
            )
        ).one()
    return (
        None if row.undelivered_oldest is None else utc(row.undelivered_oldest),
        None if row.undelivered_at is None else utc(row.undelivered_at),
    )


async def test_the_oldest_unsettled_webhook_per_subscriber(
    ledger_db: str, exchange: str, streams: Streams
) -> None:
    engine = open_writer(ledger_db)
    erp, wms = f"erp-{unique_order()}", f"wms-{unique_order()}"
    store_subscribers(
        engine,
        [SubscriberSpec(erp, ("despatched",)), SubscriberSpec(wms, ("despatched",), ("99",))],
    )
    now = datetime.now(UTC)
    with engine.begin() as connection:  # known for an hour: older webhooks count
        connection.execute(update(subscribers).values(first_seen=now - timedelta(hours=1)))
    ages = {"delivered": 20, "dead": 15, "waiting": 10, "cancelled": 30}
    orders = {kind: unique_order() for kind in ages}
    for kind, minutes in ages.items():
        event = "cancelled" if kind == "cancelled" else "despatched"  # erp takes despatched
        headers = webhook_headers(
            orders[kind], event=event, received_at=now - timedelta(minutes=minutes)
        )
        await streams.webhook(f"msg-{orders[kind]}", headers)
    await streams.records(
        [
            record(f"msg-{orders['delivered']}", Outcome.DELIVERED, subscriber=erp),
            record(f"msg-{orders['dead']}", Outcome.FAILED, subscriber=erp, status=500),
            record(f"msg-{orders['dead']}", Outcome.DEAD, subscriber=erp, status=400),
            # Failed and throttled are not settled: it is still waiting.
            record(f"msg-{orders['waiting']}", Outcome.THROTTLED, subscriber=erp, status=429),
            # Another subscriber's delivery settles nothing for erp.
            record(f"msg-{orders['waiting']}", Outcome.DELIVERED, subscriber="other"),
        ]
    )
    async with indexing(engine, exchange, ledger_db, undelivered_interval=0.2):
        await wait_for(lambda: count(engine, webhooks) == 4 and count(engine, attempts) == 5)
        # The waiting one, received 10 minutes ago (not the older settled or cancelled ones);
        # a pass that ran before every row was in may have seen another first.
        waiting = now - timedelta(minutes=10)

        def found_the_waiting_one() -> bool:
            oldest = stored(engine, erp)[0]
            if oldest is None or abs((oldest - waiting).total_seconds()) >= 1.5:
                return False
            # Its age when a pass ran: at least the 10 minutes it had at ``now`` (every pass
            # runs later), at most its age when the gauge was read, however slow the run.
            age = gauge(erp)
            return 600 <= age <= (datetime.now(UTC) - oldest).total_seconds()

        await wait_for(found_the_waiting_one)
        at = stored(engine, erp)[1]
        assert at is not None
        # wms takes only client 99: none of these is for it.
        assert gauge(wms) == 0 and stored(engine, wms)[0] is None

        passed = at
        await streams.records(
            [record(f"msg-{orders['waiting']}", Outcome.DELIVERED, subscriber=erp, attempt=2)]
        )
        # The row the console reads is written after the gauge is set, in the same pass: wait
        # for both (a pass from before the delivery was indexed may have stored it since).
        await wait_for(lambda: stored(engine, erp)[0] is None and gauge(erp) == 0)
        settled_at = stored(engine, erp)[1]
        assert settled_at is not None and settled_at > passed
    engine.dispose()


async def test_a_webhook_indexed_hours_late_still_counts_as_undelivered(
    ledger_db: str, exchange: str, streams: Streams
) -> None:
    # An indexer working through a backlog (the ledger was down, or fell behind): a pass
    # that finds everything indexed so far settled must not look back only from the clock,
    # or an unsettled webhook received hours ago and indexed after that pass is never seen.
    engine = open_writer(ledger_db)
    erp = f"erp-{unique_order()}"
    store_subscribers(engine, [SubscriberSpec(erp, ("despatched",))])
    now = datetime.now(UTC)
    with engine.begin() as connection:  # known for long: older webhooks count
        connection.execute(update(subscribers).values(first_seen=now - timedelta(hours=6)))
    settled, late = unique_order(), unique_order()
    received = now - timedelta(hours=3)
    await streams.webhook(f"msg-{settled}", webhook_headers(settled, received_at=received))
    await streams.records([record(f"msg-{settled}", Outcome.DELIVERED, subscriber=erp)])
    async with indexing(engine, exchange, ledger_db, undelivered_interval=0.2):
        await wait_for(lambda: count(engine, webhooks) == 1 and count(engine, attempts) == 1)
        # A pass over what is indexed so far: nothing unsettled.
        first = datetime.now(UTC)
        await wait_for(lambda: (stored(engine, erp)[1] or first) > first)
        assert stored(engine, erp)[0] is None and gauge(erp) == 0
        # The backlog goes on: a webhook received two hours ago, never delivered.
        late_received = now - timedelta(hours=2)
        await streams.webhook(f"msg-{late}", webhook_headers(late, received_at=late_received))
        await wait_for(lambda: count(engine, webhooks) == 2)

        def found_the_late_one() -> bool:
            oldest = stored(engine, erp)[0]
            return oldest is not None and abs((oldest - late_received).total_seconds()) < 1.5

        await wait_for(found_the_late_one)
        assert gauge(erp) >= timedelta(hours=2).total_seconds()
    engine.dispose()
