"""Audit records in the ledger, on SQLite and PostgreSQL: the schema upgrade that adds the
``audit`` table keeps every row; the indexer turns the audit records of the deliveries stream
into ``audit`` rows (malformed ones counted and skipped); ``/audit``'s pages are newest first
and stable; and ``dlq replay`` on the command line leaves one audit row naming the OS user."""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, inspect, select

from bridge.cli import main
from bridge.core.audit import AUDIT_TYPE, Action, AuditRecord, Via, audit_record
from bridge.core.records import RecordError, deliveries_stream
from bridge.errors import CommandError
from bridge.ledger.audits import audit_page
from bridge.ledger.database import open_engine, open_writer
from bridge.ledger.migrations import VERSION, current_version, upgrade
from bridge.ledger.schema import attempts, audit, ledger_schema, metadata, stream_offsets, webhooks
from bridge.ledger.store import Batch, remove_before, write_batch
from tests.conftest import AMQP_URL, BrokerProbe
from tests.support.ledger_index import count, indexing, wait_for
from tests.support.ledger_rows import STREAMS, attempt_row, webhook_row
from tests.support.ledger_streams import Streams, record
from tests.worker_helpers import bare_dead_letters, unique_name


def change(n: int, at: datetime, action: Action = Action.PAUSE) -> dict[str, object]:
    return {
        "audit_id": f"a-{n}",
        "at": at,
        "operator": "alice",
        "via": "console",
        "action": str(action),
        "subscriber": "erp",
        "count": None if action in (Action.PAUSE, Action.RESUME) else n,
        "detail": None,
        "stream_offset": n,
    }


def test_an_audit_record_survives_its_body_and_refuses_a_delivery_record() -> None:
    made = audit_record(
        Action.DISCARD, operator=None, via=Via.CONSOLE, subscriber="erp", count=3, error="x"
    )
    assert made.operator == "console" and made.detail == "stopped: x"
    assert AuditRecord.from_body(made.to_body()) == made
    assert audit_record(Action.PAUSE, operator=None, via=Via.CLI, subscriber="e").operator == "cli"
    with pytest.raises(RecordError):
        AuditRecord.from_body(record("m-1").to_body())
    with pytest.raises(RecordError):
        AuditRecord.from_body(b'{"v": 1, "kind": "audit", "audit_id": "a", "count": true}')


def test_the_upgrade_from_version_1_adds_the_audit_table_and_keeps_every_row(
    ledger_db: str,
) -> None:
    # A ledger as version 1 made it: every table but audit, stamped 1, with rows.
    engine = open_engine(ledger_db, writer=True)
    with engine.begin() as connection:
        metadata.create_all(
            connection, tables=[t for t in metadata.sorted_tables if t is not audit]
        )
        connection.execute(ledger_schema.insert().values(id=1, version=1))
    batch = Batch(
        webhooks=[webhook_row(n) for n in range(20)],
        attempts=[attempt_row(n, datetime.now(UTC)) for n in range(30)],
    )
    batch.cover("x.archive", 19)
    batch.cover("x.deliveries", 29)
    write_batch(engine, batch, STREAMS)
    with engine.connect() as connection:
        assert "audit" not in inspect(connection).get_table_names()
    with pytest.raises(CommandError, match="restart `mintsoft-bridge ledger`"):
        audit_page(engine)
    engine.dispose()

    engine = open_writer(ledger_db)  # the writer upgrades on start
    with engine.connect() as connection:
        assert current_version(connection) == VERSION  # 2 added audit; later ones keep it
        assert connection.execute(select(func.count()).select_from(webhooks)).scalar() == 20
        assert connection.execute(select(func.count()).select_from(attempts)).scalar() == 30
        assert {i["name"] for i in inspect(connection).get_indexes("audit")} >= {"audit_at"}
        offsets = {r.stream: r.last_offset for r in connection.execute(select(stream_offsets))}
    assert offsets == {"x.archive": 19, "x.deliveries": 29}
    later = Batch(audit=[change(30, datetime.now(UTC))])
    later.cover("x.deliveries", 30)
    assert write_batch(engine, later, STREAMS) == 0
    assert audit_page(engine).total == 1
    assert upgrade(engine) == VERSION  # again: nothing to do
    engine.dispose()


def test_audit_pages_are_newest_first_and_stable(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    start = datetime.now(UTC) - timedelta(hours=1)
    batch = Batch(audit=[change(n, start + timedelta(seconds=n)) for n in range(7)])
    batch.cover("x.deliveries", 6)
    write_batch(engine, batch, STREAMS)
    first = audit_page(engine, size=3)
    assert [e.at for e in first.entries] == sorted((e.at for e in first.entries), reverse=True)
    assert first.total == 7 and first.entries[0].at == start + timedelta(seconds=6)
    # A change arriving now does not shift the older pages.
    newer = Batch(audit=[change(7, datetime.now(UTC))])
    newer.cover("x.deliveries", 7)
    write_batch(engine, newer, STREAMS)
    second = audit_page(engine, before=first.older, size=3)
    third = audit_page(engine, before=second.older, size=3)
    seconds = [int((e.at - start).total_seconds()) for e in (*second.entries, *third.entries)]
    assert seconds == [3, 2, 1, 0] and third.older is None
    # Retention removes audit rows with the others.
    assert remove_before(engine, start + timedelta(seconds=2, milliseconds=500)) == 3
    assert audit_page(engine).total == 5
    engine.dispose()


async def test_the_indexer_writes_audit_rows_from_the_deliveries_stream(
    ledger_db: str, exchange: str, streams: Streams
) -> None:
    engine = open_writer(ledger_db)
    made = [
        audit_record(Action.PAUSE, operator="alice", via=Via.CONSOLE, subscriber="erp"),
        audit_record(
            Action.DISCARD,
            operator="bob",
            via=Via.CONSOLE,
            subscriber="erp",
            count=12,
            detail="all matching a filter",
        ),
        audit_record(Action.DLQ_REPLAY, operator="root", via=Via.CLI, subscriber="crm", count=4),
    ]
    await streams.audits(made)
    await streams.records([record("m-1"), record("m-2")])
    await streams.raw_record(b'{"kind": "audit", "v": 1}', message_type=AUDIT_TYPE)
    async with indexing(engine, exchange, ledger_db):
        await wait_for(lambda: count(engine, audit) == 3 and count(engine, attempts) == 2)
    with engine.connect() as connection:
        rows = {r.audit_id: r._mapping for r in connection.execute(select(audit))}
        malformed = connection.execute(
            select(stream_offsets.c.malformed).where(
                stream_offsets.c.stream == deliveries_stream(exchange)
            )
        ).scalar()
    assert malformed == 1
    discard = rows[made[1].audit_id]
    assert (discard["operator"], discard["via"], discard["action"], discard["subscriber"]) == (
        "bob",
        "console",
        "discard",
        "erp",
    )
    assert (discard["count"], discard["detail"]) == (12, "all matching a filter")
    assert rows[made[0].audit_id]["count"] is None
    page = audit_page(engine)
    assert [e.action for e in page.entries] == ["dlq-replay", "discard", "pause"]
    engine.dispose()


async def test_dlq_replay_on_the_command_line_leaves_an_audit_row(
    ledger_db: str,
    exchange: str,
    streams: Streams,
    probe: BrokerProbe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_AMQP_URL", AMQP_URL)
    monkeypatch.setenv("BRIDGE_EXCHANGE", exchange)
    name = unique_name("audited")
    await bare_dead_letters(probe, name, 3)
    assert await asyncio.to_thread(main, ["dlq", "replay", name, "--limit", "2"]) == 0
    engine = open_writer(ledger_db)
    async with indexing(engine, exchange, ledger_db):
        await wait_for(lambda: count(engine, audit) == 1 and count(engine, attempts) == 2)
    [entry] = audit_page(engine).entries
    assert (entry.operator, entry.via, entry.action, entry.subscriber, entry.count) == (
        getpass.getuser(),
        "cli",
        "dlq-replay",
        name,
        2,
    )
    assert entry.detail == "--limit 2"
    engine.dispose()
