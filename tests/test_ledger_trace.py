"""``trace`` on both databases: the five states, found by order id, order number or message
id; exit 0 when found, 1 when not, 2 without a ledger; ``--json`` in its stable shape."""

from __future__ import annotations

import orjson
import psycopg
import pytest
from sqlalchemy import Engine

from bridge.cli import main
from bridge.core.records import Outcome, Source
from bridge.ledger.database import open_writer
from bridge.ledger.queries import LedgerReader, trace
from bridge.ledger.schema import attempts, webhooks
from bridge.ledger.states import State, state_of
from bridge.ledger.store import SubscriberSpec, store_subscribers
from tests.support.ledger_db import PG_ADMIN_URL, postgres_database
from tests.support.ledger_index import count, indexing, wait_for
from tests.support.ledger_streams import Streams, record, unique_order, webhook_headers

SUBSCRIBERS = [
    SubscriberSpec("erp", ("despatched",)),
    SubscriberSpec("billing", ("despatched", "cancelled")),
    SubscriberSpec("ops", ("despatched",)),
    SubscriberSpec("crm", ("despatched",)),  # no attempt: waiting
    SubscriberSpec("wms", ("despatched",), clients=("99",)),  # client 12: not for it
    SubscriberSpec("returns", ("cancelled",)),  # another event: not for it
]


FIVE_STATES = {
    "erp": "delivered",
    "billing": "dead",
    "ops": "retrying",
    "crm": "waiting",
    "wms": "not for it",
    "returns": "not for it",
}
"""What :func:`_five_states` leaves each subscriber in."""


async def _five_states(engine: Engine, exchange: str, url: str, streams: Streams) -> str:
    order = unique_order()
    message = f"msg-{order}"
    store_subscribers(engine, SUBSCRIBERS)
    await streams.webhook(message, webhook_headers(order, order_number=f"SO-{order}"))
    await streams.records(
        [
            record(message, Outcome.FAILED, status=500, order_id=order, error="HTTPError: 500"),
            record(message, Outcome.DELIVERED, subscriber="erp", attempt=2, order_id=order),
            record(message, Outcome.FAILED, subscriber="billing", status=400, order_id=order),
            record(message, Outcome.DEAD, subscriber="billing", status=400, order_id=order),
            record(message, Outcome.THROTTLED, subscriber="ops", status=429, order_id=order),
        ]
    )
    async with indexing(engine, exchange, url):
        await wait_for(lambda: count(engine, webhooks) == 1 and count(engine, attempts) == 5)
    return order


def test_the_state_follows_the_latest_attempt() -> None:
    assert state_of(None, for_it=True) is State.WAITING
    assert state_of(None, for_it=False) is State.NOT_FOR_IT
    assert state_of(Outcome.FAILED, for_it=False) is State.RETRYING
    assert state_of(Outcome.REPLAYED, for_it=True) is State.RETRYING
    assert state_of(Outcome.DISCARDED, for_it=True) is State.DEAD
    assert state_of(Outcome.DELIVERED, for_it=True) is State.DELIVERED


async def test_the_five_states(ledger_db: str, exchange: str, streams: Streams) -> None:
    engine = open_writer(ledger_db)
    order = await _five_states(engine, exchange, ledger_db, streams)
    for query in (order, f"SO-{order}", f"msg-{order}"):
        found = trace(engine, query)
        assert len(found.webhooks) == 1, query
        states = {s.name: str(s.state) for s in found.webhooks[0].subscribers}
        assert states == FIVE_STATES
    erp = next(s for s in trace(engine, order).webhooks[0].subscribers if s.name == "erp")
    assert [(a.attempt, a.outcome, a.status) for a in erp.attempts] == [
        (1, "failed", 500),
        (2, "delivered", 200),
    ]
    assert erp.attempts[0].error == "HTTPError: 500"
    assert trace(engine, "no-such-order").webhooks == ()
    engine.dispose()


async def test_a_replay_out_of_the_dlq_makes_it_retrying_again(
    ledger_db: str, exchange: str, streams: Streams
) -> None:
    engine = open_writer(ledger_db)
    order = unique_order()
    message = f"msg-{order}"
    store_subscribers(engine, [SubscriberSpec("erp", ("despatched",))])
    await streams.webhook(message, webhook_headers(order))
    await streams.records(
        [
            record(message, Outcome.DEAD, status=400, order_id=order),
            record(message, Outcome.REPLAYED, status=None, source=Source.DLQ_REPLAY),
        ]
    )
    async with indexing(engine, exchange, ledger_db):
        await wait_for(lambda: count(engine, attempts) == 2)
    (erp,) = trace(engine, order).webhooks[0].subscribers
    assert erp.state is State.RETRYING
    engine.dispose()


async def test_the_trace_command(
    ledger_db: str,
    exchange: str,
    streams: Streams,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = open_writer(ledger_db)
    order = await _five_states(engine, exchange, ledger_db, streams)
    engine.dispose()
    monkeypatch.setenv("BRIDGE_LEDGER_URL", ledger_db)

    assert main(["trace", order]) == 0
    out = capsys.readouterr().out
    assert f"order {order} / SO-{order}" in out
    for line in ("erp", "delivered  2 attempts"), ("crm", "waiting"), ("wms", "not for it"):
        assert any(line[0] in row and line[1] in row for row in out.splitlines()), line

    assert main(["trace", f"SO-{order}", "--json"]) == 0
    document = orjson.loads(capsys.readouterr().out)
    assert document["query"] == f"SO-{order}"
    (webhook,) = document["webhooks"]
    assert set(webhook) == {
        "message_id", "event", "order_id", "order_number", "received_at", "source", "bytes",
        "subscribers",
    }  # fmt: skip
    assert webhook["received_at"].endswith("Z") and webhook["source"] == "webhook"
    erp = next(s for s in webhook["subscribers"] if s["name"] == "erp")
    assert erp["state"] == "delivered"
    assert [a["status"] for a in erp["attempts"]] == [500, 200]
    assert set(erp["attempts"][0]) == {
        "at", "attempt", "outcome", "status", "answer", "error", "duration_ms", "source",
        "operator",
    }  # fmt: skip

    assert main(["trace", "no-such-order"]) == 1
    assert "nothing in the ledger" in capsys.readouterr().out


def test_trace_without_a_ledger_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_LEDGER_URL", "")
    assert main(["trace", "20285"]) == 2
    err = capsys.readouterr().err
    assert "BRIDGE_LEDGER_URL" in err and len(err.strip().splitlines()) == 1


def test_trace_of_a_ledger_not_yet_created_says_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    monkeypatch.setenv("BRIDGE_LEDGER_URL", f"sqlite:///{tmp_path}/none.sqlite3")
    assert main(["trace", "20285"]) == 1
    err = capsys.readouterr().err
    assert "mintsoft-bridge ledger" in err and len(err.strip().splitlines()) == 1


def test_trace_refuses_the_ledger_url_as_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["trace", "1", "--ledger-url", "postgresql://u:pw@h/db"])
    assert exit.value.code == 2
    assert "BRIDGE_LEDGER_URL_FILE" in capsys.readouterr().err


def test_ledger_without_a_ledger_url_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_LEDGER_URL", "")
    assert main(["ledger"]) == 2
    err = capsys.readouterr().err
    assert "BRIDGE_LEDGER_URL" in err and len(err.strip().splitlines()) == 1


async def test_a_reader_rides_out_a_dropped_postgresql_connection() -> None:
    # Readers keep their connections without a ping per lookup: one the server dropped (a
    # restart, an idle timeout) costs one retry on a fresh connection, never an error.
    with postgres_database() as url:
        open_writer(url).dispose()
        reader = LedgerReader(url)
        try:
            assert (await reader.trace("20285")).webhooks == ()
            name = url.rsplit("/", 1)[1]
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                ).fetchone()
            assert ended is not None and ended[0] >= 1
            assert (await reader.trace("20285")).webhooks == ()
        finally:
            reader.close()
