"""The subscriber figures the console reads from the ledger, on SQLite and PostgreSQL: last
delivery (found behind many failures), last error and since when it fails, throttled until
when, attempts per minute over the last hour, the undelivered pass's stored result; each
question planned through an index; and the schema upgrade from version 2 that adds them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, inspect, literal_column, select, text

from bridge.errors import CommandError
from bridge.ledger.database import open_writer
from bridge.ledger.figures import (
    WINDOW_MINUTES,
    first_after_statement,
    latest_statement,
    subscriber_figures,
    window_start,
)
from bridge.ledger.migrations import VERSION, current_version, upgrade
from bridge.ledger.schema import attempts, ledger_schema, subscribers
from bridge.ledger.store import (
    Batch,
    SubscriberSpec,
    store_subscribers,
    store_undelivered,
    write_batch,
)
from tests.support.ledger_rows import STREAMS, attempt_row

NOW = datetime.now(UTC).replace(second=30, microsecond=0)
_offsets = iter(range(1_000_000))


def attempt(
    subscriber: str, outcome: str, at: datetime, status: int | None = None, **more: Any
) -> dict[str, Any]:
    """An attempt to ``subscriber`` of a webhook of its own (order ``20000 + n``)."""
    n = next(_offsets)
    fields = {"order_id": str(20000 + n), "retry_after": None, **more}
    return attempt_row(
        n,
        at,
        record_id=f"r-{subscriber}-{n}",
        subscriber=subscriber,
        outcome=outcome,
        status=status,
        duration_ms=12.0,
        **fields,
    )


def write(engine: Engine, rows: list[dict[str, Any]]) -> None:
    batch = Batch(attempts=rows)
    batch.cover("x.deliveries", max(r["stream_offset"] for r in rows), NOW)
    write_batch(engine, batch, STREAMS)


def test_last_delivery_error_failing_since_and_minutes(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    delivered_at = NOW - timedelta(minutes=40)
    rows = [
        attempt("erp", "delivered", NOW - timedelta(days=2), 200),
        attempt("erp", "delivered", delivered_at, 200, order_id="20285", order_number="SO-20285"),
        attempt("erp", "failed", delivered_at - timedelta(minutes=1), 500),  # before: not "since"
    ]
    # 300 failures after the delivery, two a minute from 30 minutes ago, then a dead one.
    first_failure = NOW - timedelta(minutes=30)
    rows += [
        attempt("erp", "failed", first_failure + timedelta(seconds=6 * i), 500, answer="busy")
        for i in range(300)
    ]
    rows.append(attempt("erp", "dead", NOW - timedelta(seconds=5), 500, answer="APIKEY=abc busy"))
    rows.append(attempt("other", "delivered", NOW, 200))  # another subscriber's
    write(engine, rows)
    store_subscribers(engine, [SubscriberSpec("erp", ("despatched",))])

    got = subscriber_figures(engine, ["erp", "nobody"], "x.deliveries", NOW)
    erp = got["erp"]
    assert erp.last_delivery is not None and erp.last_delivery.at == delivered_at
    assert erp.last_delivery.order_number == "SO-20285"
    assert erp.last_error is not None and erp.last_error.outcome == "dead"
    assert erp.last_error.status == 500 and erp.last_error.answer == "APIKEY=abc busy"
    assert erp.failing_since == first_failure and erp.failing
    assert len(erp.minutes) == WINDOW_MINUTES
    assert erp.minutes[0].start == window_start(NOW) and erp.minutes[-1].start <= NOW
    assert (erp.delivered, erp.failed) == (1, 302)  # the 40-minute-old delivery is in
    assert sum(1 for m in erp.minutes if m.failed) == 32  # 31 minutes, and 41 min ago
    assert erp.known and erp.undelivered_at is None  # no pass stored yet
    assert erp.deliveries_current_at is not None

    nobody = got["nobody"]
    assert nobody.last_delivery is None and nobody.last_error is None
    assert not nobody.failing and nobody.delivered == 0 and not nobody.known
    engine.dispose()


def test_throttled_until_and_the_stored_undelivered_pass(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    store_subscribers(engine, [SubscriberSpec("carrier", ("despatched",))])
    write(
        engine,
        [
            attempt("carrier", "delivered", NOW - timedelta(minutes=3), 200),
            attempt("carrier", "throttled", NOW - timedelta(seconds=10), 429, retry_after=30.0),
        ],
    )
    received = NOW - timedelta(minutes=20)
    store_undelivered(engine, {"carrier": received, "unknown": None}, NOW)
    carrier = subscriber_figures(engine, ["carrier"], "x.deliveries", NOW)["carrier"]
    assert carrier.throttled_until == NOW + timedelta(seconds=20)
    assert carrier.throttled == 1 and not carrier.failing
    assert carrier.undelivered_oldest == received and carrier.undelivered_at == NOW
    later = subscriber_figures(engine, ["carrier"], "x.deliveries", NOW + timedelta(minutes=1))
    assert later["carrier"].throttled_until is None  # its pause is over
    engine.dispose()


def _plan(engine: Engine, statement: Any) -> str:
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        explain = "EXPLAIN" if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
        rows = connection.exec_driver_sql(f"{explain} {compiled}").all()
    return " ".join(str(r[-1]) for r in rows)


def test_each_question_is_planned_through_the_subscriber_outcome_index(ledger_db: str) -> None:
    """On the shape that misleads a planner: a long history of deliveries, then an outage
    of failures, the statistics fresh. (With ``outcome = 'delivered' ORDER BY at DESC``
    PostgreSQL walked ``attempts_at`` backwards through every failure.)"""
    engine = open_writer(ledger_db)
    old = NOW - timedelta(days=2)
    write(
        engine, [attempt("erp", "delivered", old + timedelta(seconds=n), 200) for n in range(6000)]
    )
    write(engine, [attempt("erp", "failed", NOW - timedelta(seconds=n), 500) for n in range(3000)])
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    # Literal times (literal binds need text): an hour ago, and two hours ago.
    after = literal_column((NOW - timedelta(hours=2)).strftime("'%Y-%m-%d %H:%M:%S'"))
    hour_ago = literal_column((NOW - timedelta(hours=1)).strftime("'%Y-%m-%d %H:%M:%S'"))
    hour = (
        select(attempts.c.outcome, func.count())
        .where(
            attempts.c.subscriber == "erp",
            attempts.c.outcome.in_(["delivered", "failed"]),
            attempts.c.at >= hour_ago,
        )
        .group_by(attempts.c.outcome)
    )
    for statement in (
        latest_statement("erp", "delivered"),
        latest_statement("erp", "failed"),
        first_after_statement("erp", "failed", None).where(attempts.c.at > after),
    ):
        plan = _plan(engine, statement)
        assert "attempts_subscriber_outcome_at" in plan, plan
    # The hour: a range of an index on the time (this subscriber's, or every one's).
    plan = _plan(engine, hour)
    assert "Seq Scan" not in plan and "USING" in plan.upper(), plan
    found = subscriber_figures(engine, ["erp"], "x.deliveries", NOW)["erp"]
    assert found.last_delivery is not None and found.last_delivery.at == old + timedelta(
        seconds=5999
    )
    engine.dispose()


def test_an_older_ledger_is_upgraded_keeping_its_rows(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    write(engine, [attempt("erp", "delivered", NOW - timedelta(minutes=1), 200)])
    store_subscribers(engine, [SubscriberSpec("erp", ("despatched",))])
    # Back to version 2: without what version 3 added.
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX attempts_subscriber_outcome_at"))
        connection.execute(text("ALTER TABLE attempts DROP COLUMN retry_after"))
        connection.execute(text("ALTER TABLE subscribers DROP COLUMN undelivered_oldest"))
        connection.execute(text("ALTER TABLE subscribers DROP COLUMN undelivered_at"))
        connection.execute(ledger_schema.update().values(version=2))
    assert upgrade(engine) == 2
    with engine.connect() as connection:
        assert current_version(connection) == VERSION == 3
        indexes = {i["name"] for i in inspect(connection).get_indexes("attempts")}
        assert "attempts_subscriber_outcome_at" in indexes
        assert "retry_after" in {c["name"] for c in inspect(connection).get_columns("attempts")}
        assert connection.execute(select(func.count()).select_from(attempts)).scalar() == 1
        assert connection.execute(select(subscribers.c.name)).scalars().all() == ["erp"]
    figures = subscriber_figures(engine, ["erp"], "x.deliveries", NOW)["erp"]
    assert figures.delivered == 1 and figures.known
    engine.dispose()


def test_a_ledger_older_than_the_figures_is_told_to_upgrade(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    with engine.begin() as connection:
        connection.execute(ledger_schema.update().values(version=2))
    with pytest.raises(CommandError, match="restart `mintsoft-bridge ledger`"):
        subscriber_figures(engine, ["erp"], "x.deliveries", NOW)
    engine.dispose()
