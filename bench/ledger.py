"""``python -m bench.ledger``: the delivery ledger at a month's size, on SQLite and PostgreSQL.

1. Streams: ``--size`` webhooks (default 1,500,000: a month of a mid-size 3PL, issue 21)
   and twice as many delivery records (two webhooks an order, the attempts spread over
   them, times over 29 days) are published, confirmed, straight into a fresh exchange's
   archive and deliveries streams on the broker at 5672, the way the receiver and the
   worker publish them (the receiver's hand-built frames).
2. Ingest, per database: the real indexer (``bridge.ledger.indexer.Indexer``) reads both
   streams from offset 0 into an empty ledger (the subscribers ``ledger --config`` would
   store are stored first), timed from its start to the last row: rows per second, and
   rows per second of this process's CPU.
3. Lookups on that loaded ledger: ``trace`` (the query of the ``trace`` command) and the
   console's order page (``GET /orders?q=...`` on the console app, signed in) for
   ``--lookups`` random orders each, by order id, order number and message id in turn:
   p50 / p99. ``--gauge`` also times the undelivered-age query's first, widest pass.
4. Row sizes: database bytes per webhook and per attempt (tables with their indexes).

The worker's messages/s with delivery records on and off, side by side, is
``python -m bench --only consume`` (``worker`` and ``worker-no-records``).

PostgreSQL: a database of its own on 127.0.0.1:5432 (user postgres; BRIDGE_TEST_PG_URL),
dropped at the end; the streams are deleted at the end. Prints a line per step and one
JSON document with the targets of issue 21: ingest >= 10,000 rows/s and lookup p99 <= 100
ms, on both databases.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import multiprocessing
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
from aiohttp.test_utils import TestClient, TestServer
from pamqp.commands import Basic
from sqlalchemy import Engine, text, update

from bridge.amqp import aiormq_internals as internals
from bridge.amqp.frames import PublishFrames
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
    HEADER_WAREHOUSE_ID,
    Envelope,
    rfc3339,
)
from bridge.core.records import (
    RECORD_TYPE,
    DeliveryRecord,
    Outcome,
    Source,
    deliveries_stream,
)
from bridge.core.settings import Settings
from bridge.ledger.database import open_writer
from bridge.ledger.indexer import BATCH_ROWS, Indexer
from bridge.ledger.queries import LedgerReader, trace, undelivered_oldest
from bridge.ledger.schema import subscribers
from bridge.ledger.store import SubscriberSpec, store_subscribers
from tests.support.ledger_db import ledger_database

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
FULL_SIZE = 1_500_000
"""Webhooks of a month of a mid-size 3PL (issue 21); the attempts are twice as many."""
IN_FLIGHT = 5000
DAYS = 29
"""The webhooks' times spread over this many days (within the 30 days of retention)."""
SUBSCRIBERS = [
    SubscriberSpec("erp", ("despatched", "delivered")),
    SubscriberSpec("wms", ("despatched",)),
]
Result = dict[str, Any]


@contextlib.contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    """A fresh ledger URL: an SQLite file in ``directory``, or a PostgreSQL database of its
    own (dropped afterwards), as the tests make them."""
    with ledger_database(kind, directory / uuid.uuid4().hex[:6]) as url:
        yield url


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# --- 1. the streams ---------------------------------------------------------------------


def order_of(n: int) -> int:
    return 100_000 + n // 2


def messages(exchange: str, start: int, end: int, per_webhook: float) -> Iterator[Envelope]:
    """Webhooks ``start`` to ``end``: webhook ``n`` is order ``100000 + n // 2``'s
    despatched (even) or delivered (odd), message id ``n`` in 32 hex digits; after each
    come its attempts (erp and wms in turn, the last two delivered, earlier ones failed),
    ``per_webhook`` on average."""
    rng = random.Random(start)
    now = time.time()
    archive, records = archive_name(exchange), deliveries_stream(exchange)
    for n in range(start, end):
        order = order_of(n)
        at = now - rng.uniform(0, DAYS * 86400)
        message = f"{n:032x}"
        event = "despatched" if n % 2 == 0 else "delivered"
        headers = {
            HEADER_EVENT: event,
            HEADER_RECEIVED_AT: rfc3339(at),
            HEADER_ORDER_ID: str(order),
            HEADER_ORDER_NUMBER: f"SO-{order}",
            HEADER_CLIENT_ID: "12",
            HEADER_WAREHOUSE_ID: "3",
        }
        body = b'{"ID": %d}' % order
        yield Envelope(event, archive, body, message, at, headers)
        want = int((n + 1) * per_webhook) - int(n * per_webhook)
        for k in range(want):
            record_id = f"{rng.getrandbits(128):032x}"
            last = k >= want - 2
            record = DeliveryRecord(
                record_id=record_id,
                message_id=message,
                subscriber="erp" if k % 2 == 0 else "wms",
                event=event,
                order_id=str(order),
                order_number=f"SO-{order}",
                attempt=k // 2 + 1,
                outcome=Outcome.DELIVERED if last else Outcome.FAILED,
                status=200 if last else 500,
                answer='{"ok":true,"id":"A-1"}' if last else None,
                error=None if last else "HTTP 500: busy",
                duration_ms=18.5,
                at=rfc3339(at + k + 1).replace("Z", "000Z"),
                source=Source.WORKER,
                operator=None,
            )
            yield Envelope(RECORD_TYPE, records, record.to_body(), record_id, at + k + 1, {})


async def publish(exchange: str, start: int, end: int, per_webhook: float) -> int:
    """Publish webhooks ``start`` to ``end`` and their attempts, ``IN_FLIGHT`` unconfirmed
    at most, through the publisher's fast path; how many messages."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        reason = internals.check(channel)
        assert reason is None, reason
        fast = internals.FastChannel(channel)
        frames = PublishFrames(fast.number, "", fast.max_body_frame)
        window: collections.deque[internals.Pending] = collections.deque()

        async def settle(pending: internals.Pending) -> None:
            answer = await pending.future
            assert not isinstance(answer, Basic.Nack), answer
            fast.finish(pending, None)

        count = 0
        for envelope in messages(exchange, start, end, per_webhook):
            window.append(fast.publish(frames.encode(envelope), envelope.message_id))
            count += 1
            if len(window) >= IN_FLIGHT:
                await settle(window.popleft())
        while window:
            await settle(window.popleft())
    finally:
        await connection.close()
    return count


def publish_part(exchange: str, start: int, end: int, per_webhook: float) -> int:
    return asyncio.run(publish(exchange, start, end, per_webhook))


async def fill_streams(exchange: str, webhooks: int, attempts: int, processes: int) -> Result:
    """Declare the streams and publish every message from ``processes`` processes, each a
    slice of the webhooks with their attempts; seconds and messages per second."""
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel()
    retention = ArchiveRetention()
    await declare(channel, receiver_topology(exchange, retention, retention))
    await connection.close()
    started = time.perf_counter()
    step = -(-webhooks // processes)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        parts = [
            loop.run_in_executor(
                pool,
                publish_part,
                exchange,
                start,
                min(start + step, webhooks),
                attempts / webhooks,
            )
            for start in range(0, webhooks, step)
        ]
        count = sum(await asyncio.gather(*parts))
    seconds = time.perf_counter() - started
    assert count == webhooks + attempts, (count, webhooks, attempts)
    return {
        "messages": count,
        "processes": processes,
        "seconds": round(seconds, 1),
        "per_s": round(count / seconds),
    }


async def delete_streams(exchange: str) -> None:
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel()
    await delete(channel, receiver_topology(exchange, ArchiveRetention(), ArchiveRetention()))
    await connection.close()


# --- 2. ingest through the real indexer ---------------------------------------------------


def count_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        webhooks = connection.execute(text("SELECT count(*) FROM webhooks")).scalar_one()
        attempts = connection.execute(text("SELECT count(*) FROM attempts")).scalar_one()
    return int(webhooks) + int(attempts)


async def ingest(url: str, exchange: str, total: int, batch_rows: int = BATCH_ROWS) -> Result:
    engine = open_writer(url)
    store_subscribers(engine, SUBSCRIBERS)
    settings = Settings(amqp_urls=(AMQP_URL,), exchange=exchange, ledger_url=url)
    # Retention runs once, on an empty ledger: none of the rows is past the 30 days.
    indexer = Indexer(settings, engine, url, batch_rows=batch_rows, retention_interval=86400)
    stop = asyncio.Event()
    loads = [load_average()]
    started = time.perf_counter()
    cpu = time.process_time()
    task = asyncio.create_task(indexer.run(stop))
    next_note = started + 30
    try:
        while indexer.written < total:
            assert not task.done(), task
            await asyncio.sleep(0.05)
            if time.perf_counter() > next_note:
                next_note += 30
                loads.append(load_average())
                rate = indexer.written / (time.perf_counter() - started)
                print(f"  ... {indexer.written:,} rows, {rate:,.0f}/s", file=sys.stderr)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        loads.append(load_average())
    finally:
        stop.set()
        await asyncio.wait_for(task, 120)
    rows = count_rows(engine)
    with engine.begin() as connection:
        # Known for longer than the rows are old: the gauge's first pass reads them all.
        connection.execute(
            update(subscribers).values(first_seen=datetime.now(UTC) - timedelta(days=DAYS + 1))
        )
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
    engine.dispose()
    assert rows == total, (rows, total)
    return {
        "rows": rows,
        "batch_rows": batch_rows,
        "seconds": round(seconds, 1),
        "rows_per_s": round(rows / seconds),
        # CPU seconds of this process (consuming, parsing, the SQLite writes; not the
        # PostgreSQL server's): rows per second of one core, what a shared machine hides.
        "cpu_seconds": round(cpu, 1),
        "rows_per_cpu_s": round(rows / cpu),
        "load_average": loads,
    }


# --- 3. lookups on the loaded ledger -------------------------------------------------------


def queries(webhooks: int, count: int, seed: int = 11) -> list[str]:
    """Random orders, asked by order id, order number and message id in turn."""
    rng = random.Random(seed)
    asked = []
    for i in range(count):
        n = rng.randrange(webhooks) & ~1  # the order's despatched webhook
        order = order_of(n)
        asked.append([str(order), f"SO-{order}", f"{n:032x}"][i % 3])
    return asked


def percentiles(timings: list[float]) -> Result:
    timings = sorted(timings)
    return {
        "p50_ms": round(statistics.median(timings), 2),
        "p99_ms": round(timings[max(0, int(len(timings) * 0.99) - 1)], 2),
        "max_ms": round(timings[-1], 2),
    }


def trace_lookups(url: str, asked: list[str]) -> Result:
    engine = open_writer(url)
    timings = []
    try:
        for query in asked:
            started = time.perf_counter()
            found = trace(engine, query)
            timings.append((time.perf_counter() - started) * 1000)
            assert found.webhooks, query
    finally:
        engine.dispose()
    return {"lookups": len(asked), **percentiles(timings)}


async def page_lookups(url: str, exchange: str, asked: list[str]) -> Result:
    """The console's order page, as an operator's browser asks it (signed in)."""
    import dataclasses

    from bridge.console.app import build_app
    from tests.console_helpers import console_state, sign_in

    reader = LedgerReader(url)
    state = dataclasses.replace(console_state(exchange, []), ledger=reader)
    timings = []
    try:
        async with TestClient(TestServer(build_app(state))) as client:
            await sign_in(client)
            for query in asked:
                started = time.perf_counter()
                answer = await client.get("/orders", params={"q": query})
                page = await answer.text()
                timings.append((time.perf_counter() - started) * 1000)
                assert answer.status == 200 and "data-subscriber=" in page, query
    finally:
        reader.close()
    return {"pages": len(asked), **percentiles(timings)}


def gauge(url: str) -> float:
    engine = open_writer(url)
    try:
        started = time.perf_counter()
        undelivered_oldest(engine, {})
        return round(time.perf_counter() - started, 2)
    finally:
        engine.dispose()


def sizes(url: str, webhooks: int, attempts: int) -> Result:
    engine = open_writer(url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                w = connection.execute(text("SELECT pg_total_relation_size('webhooks')"))
                a = connection.execute(text("SELECT pg_total_relation_size('attempts')"))
                return {
                    "bytes_per_webhook": round(int(w.scalar_one()) / webhooks),
                    "bytes_per_attempt": round(int(a.scalar_one()) / attempts),
                }
            try:
                rows = connection.execute(
                    text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
                ).all()
            except Exception:  # an SQLite built without dbstat
                rows = []
    finally:
        engine.dispose()
    by_name = {name: int(size) for name, size in rows}
    if not by_name:
        return {}
    webhook_bytes = sum(v for k, v in by_name.items() if "webhooks" in k)
    attempt_bytes = sum(v for k, v in by_name.items() if "attempts" in k)
    return {
        "bytes_per_webhook": round(webhook_bytes / webhooks),
        "bytes_per_attempt": round(attempt_bytes / attempts),
    }


async def one_database(
    kind: str, directory: Path, exchange: str, args: argparse.Namespace, attempts: int
) -> Result:
    total = args.size + attempts
    with database(kind, directory) as url:
        result: Result = {"ingest": await ingest(url, exchange, total, args.batch_rows)}
        print(f"{kind} ingest: {result['ingest']}", file=sys.stderr)
        asked = queries(args.size, args.lookups)
        result["trace"] = await asyncio.to_thread(trace_lookups, url, asked)
        print(f"{kind} trace: {result['trace']}", file=sys.stderr)
        result["order_page"] = await page_lookups(url, exchange, asked)
        print(f"{kind} order page: {result['order_page']}", file=sys.stderr)
        if args.gauge:
            result["undelivered_gauge_full_pass_s"] = await asyncio.to_thread(gauge, url)
        result["sizes"] = await asyncio.to_thread(sizes, url, args.size, attempts)
        result["load_average_after"] = load_average()
        return result


async def run(args: argparse.Namespace) -> Result:
    attempts = 2 * args.size
    exchange = args.exchange or f"bench.ledger.{uuid.uuid4().hex[:8]}"
    results: Result = {
        "size": {"webhooks": args.size, "attempts": attempts},
        "exchange": exchange,
        "load_average_before": load_average(),
    }
    try:
        if args.exchange is None:
            results["streams"] = await fill_streams(exchange, args.size, attempts, args.processes)
            print(f"streams: {results['streams']}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
            for kind in args.db or ["sqlite", "postgresql"]:
                results[kind] = await one_database(kind, Path(tmp), exchange, args, attempts)
    finally:
        if not args.keep_streams:
            await delete_streams(exchange)
    for kind in args.db or ["sqlite", "postgresql"]:
        done = results[kind]
        results[f"{kind}_targets"] = {
            "ingest_rows_per_s (>= 10000)": done["ingest"]["rows_per_s"],
            "ingest_met": done["ingest"]["rows_per_s"] >= 10_000,
            "trace_p99_ms (<= 100)": done["trace"]["p99_ms"],
            "order_page_p99_ms (<= 100)": done["order_page"]["p99_ms"],
            "lookup_met": max(done["trace"]["p99_ms"], done["order_page"]["p99_ms"]) <= 100,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    parser.add_argument(
        "--size",
        type=int,
        default=FULL_SIZE,
        help=f"webhooks (attempts: twice as many); default {FULL_SIZE:,}, the issue's month",
    )
    parser.add_argument("--lookups", type=int, default=1000, help="orders looked up, each way")
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS, help="the indexer's batch")
    parser.add_argument("--gauge", action="store_true", help="time the undelivered gauge too")
    parser.add_argument(
        "--processes", type=int, default=3, help="processes publishing into the streams"
    )
    parser.add_argument(
        "--keep-streams",
        action="store_true",
        help="leave the streams on the broker (prints the exchange; delete them after)",
    )
    parser.add_argument(
        "--exchange",
        help="read the streams a --keep-streams run of the same --size left, instead of filling",
    )
    parser.add_argument(
        "--db", choices=["sqlite", "postgresql"], action="append", help="default: both"
    )
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
