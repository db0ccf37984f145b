"""``python -m bench.ledger_figures``: the console's subscriber figures after an outage.

A fresh ledger on each database gets ``--history`` delivered attempts of two subscribers
(``erp`` and ``wms``) spread over the 30 days before the last hour, then ``--outage``
failed attempts of ``erp`` spread over the last hour (a target answering 500 for an hour,
after its last delivery), written straight in with the indexer's batch writer. Then
:func:`bridge.ledger.figures.subscriber_figures` (last delivery, last error, failing since,
last throttle, per minute over the hour) for both is timed ``--times`` times: p50 / p99.
PostgreSQL: a database of its own on 127.0.0.1:5432, dropped at the end. Prints one JSON
document.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, text

from bridge.ledger.database import open_writer
from bridge.ledger.figures import subscriber_figures
from bridge.ledger.store import Batch, write_batch
from tests.support.ledger_db import ledger_database

BATCH = 5000
STREAMS = {"webhooks": "bench.archive", "attempts": "bench.deliveries"}


def _row(n: int, subscriber: str, outcome: str, at: datetime, status: int) -> dict[str, Any]:
    return {
        "record_id": f"r-{n}",
        "message_id": f"{n:032x}",
        "subscriber": subscriber,
        "event": "despatched",
        "order_id": str(100_000 + n),
        "order_number": f"SO-{100_000 + n}",
        "attempt": 1,
        "outcome": outcome,
        "status": status,
        "answer": '{"ok":true}' if status == 200 else '{"error":"busy"}',
        "error": None if status == 200 else "ForwardFailed: http://erp/ answered 500",
        "duration_ms": 12.0,
        "at": at,
        "source": "worker",
        "operator": None,
        "stream_offset": n,
        "retry_after": None,
    }


def load(engine: Engine, history: int, outage: int) -> None:
    now = datetime.now(UTC)
    rows = [
        (
            n,
            "erp" if n % 2 else "wms",
            "delivered",
            now - timedelta(hours=1, seconds=n * 2_592_000 / history),
            200,
        )
        for n in range(history)
    ]
    rows += [
        (history + n, "erp", "failed", now - timedelta(seconds=3600 * (1 - n / outage) - 1), 500)
        for n in range(outage)
    ]
    for start in range(0, len(rows), BATCH):
        batch = Batch(attempts=[_row(*r) for r in rows[start : start + BATCH]])
        batch.cover(STREAMS["attempts"], start + len(batch.attempts) - 1, now)
        write_batch(engine, batch, STREAMS)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE attempts"))


def timed(engine: Engine, times: int) -> dict[str, Any]:
    timings = []
    for _ in range(times):
        started = time.perf_counter()
        found = subscriber_figures(engine, ["erp", "wms"], STREAMS["attempts"], datetime.now(UTC))
        timings.append((time.perf_counter() - started) * 1000)
        assert found["erp"].failed > 0 and found["wms"].last_delivery is not None
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 1),
        "p99_ms": round(timings[max(0, int(len(timings) * 0.99) - 1)], 1),
        "load_average": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_figures", description=__doc__)
    parser.add_argument("--history", type=int, default=400_000, help="older deliveries")
    parser.add_argument("--outage", type=int, default=100_000, help="failures in the hour")
    parser.add_argument("--times", type=int, default=100, help="figures asked")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"history": args.history, "outage": args.outage}
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
        for kind in args.db or ["sqlite", "postgresql"]:
            with ledger_database(kind, Path(tmp) / kind) as url:
                engine = open_writer(url)
                try:
                    load(engine, args.history, args.outage)
                    results[kind] = timed(engine, args.times)
                finally:
                    engine.dispose()
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
