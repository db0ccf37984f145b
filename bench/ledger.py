"""``python -m bench.ledger``: the delivery ledger, on SQLite and PostgreSQL.

1. Ingest: ``--records`` delivery records and ``--records // 2`` webhooks are published
   (confirmed) into a fresh exchange's deliveries and archive streams on the broker at
   5672; then the real indexer (``bridge.ledger.indexer.Indexer``) reads them from offset 0
   into an empty ledger, timed from its start to the last row: rows written per second.
2. Lookups: ``--webhooks`` webhooks and ``--attempts`` attempts (two webhooks an order, the
   attempts spread over them, times over 30 days) are written straight into a second
   ledger with the indexer's own batch writer; then ``trace`` (the query the ``trace``
   command and the console ask) is timed for ``--lookups`` random orders, by order id,
   order number and message id alike: p50 / p99. The undelivered-age query of the
   indexer's gauge is timed once over the whole table (its first, widest pass).
   Then the console's subscriber figures (:func:`bridge.ledger.figures.subscriber_figures`:
   last delivery, last error, failing since, per minute over the last hour) for both
   subscribers, ``--lookups`` times: p50 / p99. Before them ``--outage`` failed attempts of
   ``erp`` are written into the last hour, after its last delivery (a target answering 500
   for an hour): the busiest hour those figures read, and a last delivery behind them all.
3. Row sizes: database bytes per webhook and per attempt (tables with their indexes).

PostgreSQL: a database of its own on 127.0.0.1:5432 (user postgres; BRIDGE_TEST_PG_URL),
dropped at the end;
every stream it declares is deleted. Prints a summary and one JSON document.
Targets (issue 21): lookup p99 <= 100 ms, ingest >= 10,000 rows/s, on both databases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiormq
import orjson
from pamqp.commands import Basic
from sqlalchemy import Engine, text, update

from bridge.amqp.topology import (
    ArchiveRetention,
    archive_name,
    declare,
    delete,
    receiver_topology,
)
from bridge.core.contract import (
    HEADER_CLIENT_ID,
    HEADER_EVENT,
    HEADER_ORDER_ID,
    HEADER_ORDER_NUMBER,
    HEADER_RECEIVED_AT,
    rfc3339,
)
from bridge.core.records import DeliveryRecord, Outcome, Source, deliveries_stream, new_record_id
from bridge.core.settings import Settings
from bridge.ledger.database import open_writer
from bridge.ledger.figures import subscriber_figures
from bridge.ledger.indexer import BATCH_ROWS, Indexer
from bridge.ledger.queries import trace, undelivered_oldest
from bridge.ledger.schema import subscribers
from bridge.ledger.store import Batch, SubscriberSpec, store_subscribers, write_batch
from tests.support.ledger_db import ledger_database

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
IN_FLIGHT = 500
LOAD_BATCH = 5000
Result = dict[str, Any]


@contextlib.contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    """A fresh ledger URL: an SQLite file in ``directory``, or a PostgreSQL database of its
    own (dropped afterwards), as the tests make them."""
    with ledger_database(kind, directory / uuid.uuid4().hex[:6]) as url:
        yield url


# --- 1. ingest through the real indexer ---------------------------------------------------


async def fill_streams(exchange: str, records: int) -> None:
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    retention = ArchiveRetention()
    await declare(channel, receiver_topology(exchange, retention, retention))
    now = datetime.now(UTC)

    def webhook(n: int) -> tuple[str, bytes, Basic.Properties]:
        headers = {
            HEADER_EVENT: "despatched",
            HEADER_RECEIVED_AT: rfc3339(now.timestamp()),
            HEADER_ORDER_ID: str(n),
            HEADER_ORDER_NUMBER: f"SO-{n}",
            HEADER_CLIENT_ID: "12",
        }
        properties = Basic.Properties(
            message_id=f"m{n:031d}", headers=headers, delivery_mode=2, timestamp=now
        )
        return archive_name(exchange), orjson.dumps({"ID": n}), properties

    def record(n: int) -> tuple[str, bytes, Basic.Properties]:
        body = DeliveryRecord(
            record_id=new_record_id(),
            message_id=f"m{n // 2:031d}",
            subscriber="erp" if n % 2 else "wms",
            event="despatched",
            order_id=str(n // 2),
            order_number=None,
            attempt=1,
            outcome=Outcome.DELIVERED,
            status=200,
            answer='{"ok":true}',
            error=None,
            duration_ms=12.5,
            at=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            source=Source.WORKER,
            operator=None,
        ).to_body()
        properties = Basic.Properties(message_id=new_record_id(), delivery_mode=2, timestamp=now)
        return deliveries_stream(exchange), body, properties

    messages = [webhook(n) for n in range(records // 2)] + [record(n) for n in range(records)]
    for start in range(0, len(messages), IN_FLIGHT):
        await asyncio.gather(
            *(
                channel.basic_publish(body, exchange="", routing_key=queue, properties=props)
                for queue, body, props in messages[start : start + IN_FLIGHT]
            )
        )
    await connection.close()


def count_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        webhooks = connection.execute(text("SELECT count(*) FROM webhooks")).scalar_one()
        attempts = connection.execute(text("SELECT count(*) FROM attempts")).scalar_one()
    return int(webhooks) + int(attempts)


async def ingest(url: str, records: int, batch_rows: int = BATCH_ROWS) -> Result:
    exchange = f"bench.ledger.{uuid.uuid4().hex[:8]}"
    await fill_streams(exchange, records)
    total = records + records // 2
    engine = open_writer(url)
    settings = Settings(amqp_urls=(AMQP_URL,), exchange=exchange, ledger_url=url)
    indexer = Indexer(settings, engine, url, batch_rows=batch_rows, prefetch=4 * batch_rows)
    stop = asyncio.Event()
    started = time.perf_counter()
    cpu = time.process_time()
    task = asyncio.create_task(indexer.run(stop))
    try:
        while indexer.written < total:
            assert not task.done(), task
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        connection = await aiormq.connect(AMQP_URL)
        channel = await connection.channel()
        await delete(channel, receiver_topology(exchange, ArchiveRetention(), ArchiveRetention()))
        await connection.close()
    rows = count_rows(engine)
    engine.dispose()
    assert rows == total, (rows, total)
    return {
        "rows": rows,
        "batch_rows": batch_rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        # CPU seconds of this process (consuming, parsing, the SQLite writes; not the
        # PostgreSQL server's): rows per second of one core, what a shared machine hides.
        "cpu_seconds": round(cpu, 2),
        "rows_per_cpu_s": round(rows / cpu),
        "load_average": round(os.getloadavg()[0], 1),
    }


# --- 2. lookups on a loaded ledger ---------------------------------------------------------


def load(engine: Engine, webhooks: int, attempts: int, seed: int = 7) -> float:
    """Write the rows straight into the ledger with the indexer's batch writer; seconds."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    streams = {"webhooks": "bench.archive", "attempts": "bench.deliveries"}
    store_subscribers(
        engine,
        [
            SubscriberSpec("erp", ("despatched", "delivered")),
            SubscriberSpec("wms", ("despatched",)),
        ],
    )
    started = time.perf_counter()
    per_webhook = attempts / webhooks
    made = 0
    for start in range(0, webhooks, LOAD_BATCH):
        batch = Batch()
        for n in range(start, min(start + LOAD_BATCH, webhooks)):
            order = n // 2
            at = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
            message = f"{n:032x}"
            batch.webhooks.append(
                {
                    "message_id": message,
                    "event": "despatched" if n % 2 == 0 else "delivered",
                    "order_id": str(100_000 + order),
                    "order_number": f"SO-{100_000 + order}",
                    "client_id": "12",
                    "warehouse_id": "3",
                    "received_at": at,
                    "source": "webhook",
                    "bytes": 1800,
                    "stream_offset": n,
                }
            )
            want = int((n + 1) * per_webhook) - made
            for k in range(want):
                batch.attempts.append(
                    {
                        "record_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                        "message_id": message,
                        "subscriber": "erp" if k % 2 == 0 else "wms",
                        "event": "despatched",
                        "order_id": str(100_000 + order),
                        "order_number": f"SO-{100_000 + order}",
                        "attempt": k // 2 + 1,
                        "outcome": "delivered" if k >= want - 2 else "failed",
                        "status": 200,
                        "answer": '{"ok":true,"id":"A-1"}',
                        "error": None,
                        "duration_ms": 18.5,
                        "at": at + timedelta(seconds=k + 1),
                        "source": "worker",
                        "operator": None,
                        "stream_offset": made + k,
                    }
                )
            made += want
        batch.cover(streams["webhooks"], start)
        batch.cover(streams["attempts"], made)
        write_batch(engine, batch, streams)
    with engine.begin() as connection:
        # Known for longer than the rows are old: the gauge's first pass then reads them all.
        connection.execute(update(subscribers).values(first_seen=now - timedelta(days=31)))
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
    return time.perf_counter() - started


def outage(engine: Engine, rows: int) -> None:
    """``rows`` failed attempts of erp spread over the last hour, each after the last
    delivery the load wrote (a target that answers 500 for an hour)."""
    now = datetime.now(UTC)
    for start in range(0, rows, LOAD_BATCH):
        batch = Batch()
        for n in range(start, min(start + LOAD_BATCH, rows)):
            batch.attempts.append(
                {
                    "record_id": f"outage-{n}",
                    "message_id": f"outage-{n:026x}",
                    "subscriber": "erp",
                    "event": "despatched",
                    "order_id": str(900_000 + n),
                    "order_number": None,
                    "attempt": 1,
                    "outcome": "failed",
                    "status": 500,
                    "answer": '{"error":"busy"}',
                    "error": "ForwardFailed: http://erp/ answered 500",
                    "duration_ms": 4.0,
                    "at": now - timedelta(seconds=3600 * (1 - n / rows) - 1),
                    "source": "worker",
                    "operator": None,
                    "stream_offset": n,
                }
            )
        batch.cover("bench.outage", n)
        write_batch(engine, batch, {"webhooks": "bench.archive", "attempts": "bench.outage"})
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE attempts"))


def figures(engine: Engine, count: int) -> Result:
    """The console's subscriber figures for both subscribers, ``count`` times."""
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        found = subscriber_figures(engine, ["erp", "wms"], "bench.deliveries", datetime.now(UTC))
        timings.append((time.perf_counter() - started) * 1000)
        assert found["erp"].failed >= 1 and found["erp"].last_delivery is not None
    timings.sort()
    return {
        "figures_p50_ms": round(statistics.median(timings), 2),
        "figures_p99_ms": round(timings[int(len(timings) * 0.99) - 1], 2),
    }


def sizes(engine: Engine, webhooks: int, attempts: int, path: Path | None) -> Result:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            w = connection.execute(text("SELECT pg_total_relation_size('webhooks')")).scalar_one()
            a = connection.execute(text("SELECT pg_total_relation_size('attempts')")).scalar_one()
        return {
            "bytes_per_webhook": round(int(w) / webhooks),
            "bytes_per_attempt": round(int(a) / attempts),
        }
    assert path is not None
    with engine.connect() as connection:
        try:
            rows = connection.execute(
                text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
            ).all()
        except Exception:  # an SQLite built without dbstat: the file as a whole
            rows = []
    by_name = {name: int(size) for name, size in rows}
    if not by_name:
        total = path.stat().st_size
        return {"bytes_per_row": round(total / (webhooks + attempts))}
    webhook_bytes = sum(v for k, v in by_name.items() if "webhooks" in k)
    attempt_bytes = sum(v for k, v in by_name.items() if "attempts" in k)
    return {
        "bytes_per_webhook": round(webhook_bytes / webhooks),
        "bytes_per_attempt": round(attempt_bytes / attempts),
    }


def lookups(engine: Engine, webhooks: int, count: int, seed: int = 11) -> Result:
    rng = random.Random(seed)
    orders = webhooks // 2
    timings = []
    for i in range(count):
        order = rng.randrange(orders)
        query = [str(100_000 + order), f"SO-{100_000 + order}", f"{order * 2:032x}"][i % 3]
        started = time.perf_counter()
        found = trace(engine, query)
        timings.append((time.perf_counter() - started) * 1000)
        assert found.webhooks, query
    timings.sort()
    started = time.perf_counter()
    undelivered_oldest(engine, {})
    gauge = time.perf_counter() - started
    return {
        "lookups": count,
        "p50_ms": round(statistics.median(timings), 2),
        "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 2),
        "max_ms": round(timings[-1], 2),
        "undelivered_gauge_full_pass_s": round(gauge, 2),
    }


def loaded(
    kind: str, directory: Path, webhooks: int, attempts: int, count: int, failures: int = 0
) -> Result:
    with database(kind, directory) as url:
        engine = open_writer(url)
        try:
            seconds = load(engine, webhooks, attempts)
            result: Result = {
                "webhooks": webhooks,
                "attempts": attempts,
                "load_rows_per_s": round((webhooks + attempts) / seconds),
            }
            result.update(lookups(engine, webhooks, count))
            if failures:
                outage(engine, failures)
                result["outage_failed_attempts"] = failures
                result.update(figures(engine, count))
            path = Path(url.removeprefix("sqlite:///")) if kind == "sqlite" else None
            result.update(sizes(engine, webhooks, attempts, path))
            return result
        finally:
            engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    parser.add_argument("--records", type=int, default=50_000, help="records to ingest")
    parser.add_argument("--webhooks", type=int, default=150_000, help="webhooks to load")
    parser.add_argument("--attempts", type=int, default=300_000, help="attempts to load")
    parser.add_argument("--lookups", type=int, default=1000, help="trace lookups to time")
    parser.add_argument(
        "--outage",
        type=int,
        default=100_000,
        help="failed attempts of one subscriber in the last hour, before timing its figures",
    )
    parser.add_argument(
        "--db", choices=["sqlite", "postgresql"], action="append", help="default: both"
    )
    args = parser.parse_args(argv)
    results: Result = {"size": {"webhooks": args.webhooks, "attempts": args.attempts}}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        for kind in args.db or ["sqlite", "postgresql"]:
            with database(kind, Path(tmp)) as url:
                results[f"{kind}_ingest"] = asyncio.run(ingest(url, args.records))
            print(f"{kind} ingest: {results[f'{kind}_ingest']}", file=sys.stderr)
            results[f"{kind}_lookup"] = loaded(
                kind, Path(tmp), args.webhooks, args.attempts, args.lookups, args.outage
            )
            print(f"{kind} lookups: {results[f'{kind}_lookup']}", file=sys.stderr)
    for kind in args.db or ["sqlite", "postgresql"]:
        ingest_ok = results[f"{kind}_ingest"]["rows_per_s"] >= 10_000
        lookup_ok = results[f"{kind}_lookup"]["p99_ms"] <= 100
        results[f"{kind}_targets_met"] = {"ingest": ingest_ok, "lookup_p99": lookup_ok}
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
