"""The indexer under crashes, on both databases: SIGKILLed again and again while records
flow (a message of one record or several, as the worker sends them), it ends with exactly
one row per record (none missing, none written twice, and the
unique keys never had to turn a copy away); a broker restart mid-stream loses nothing."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiormq
import pytest
from sqlalchemy import Engine, func, select

from bridge.core.records import DeliveryRecord
from bridge.ledger.database import open_reader, open_writer
from bridge.ledger.schema import attempts, stream_offsets
from tests.conftest import AMQP_URL
from tests.support.ledger_index import count, indexing, wait_for
from tests.support.ledger_streams import Streams, record
from tests.support.rabbit_node import RabbitNode

RECORDS = 3000
KILLS = 5


def ledger_process(exchange: str, url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_LEDGER_URL": url,
    }
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "ledger"], env=env, stdout=sink, stderr=sink
        )


def runs_of(records: list[DeliveryRecord]) -> list[list[DeliveryRecord]]:
    """``records`` as the worker sends them: a message per loop turn, of 1 to 7 records."""
    sizes = itertools.cycle(range(1, 8))
    runs: list[list[DeliveryRecord]] = []
    begin = 0
    while begin < len(records):
        end = begin + next(sizes)
        runs.append(records[begin:end])
        begin = end
    return runs


def distinct_records(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count(attempts.c.record_id.distinct()))).scalar())


def duplicates(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.sum(stream_offsets.c.duplicates))).scalar() or 0)


@pytest.mark.slow
async def test_sigkilled_mid_batch_again_and_again_rows_equal_records(
    ledger_db: str, exchange: str, streams: Streams, tmp_path: Path
) -> None:
    open_writer(ledger_db).dispose()  # the schema; the indexer processes are the writers
    # The test only reads (a writer's engine would take SQLite's write lock to count).
    engine = open_reader(ledger_db)
    published: set[str] = set()

    async def produce() -> None:
        for start in range(0, RECORDS, 50):
            batch = [record(f"msg-{n}") for n in range(start, start + 50)]
            await streams.record_runs(runs_of(batch))
            published.update(r.record_id for r in batch)

    producer = asyncio.create_task(produce())
    log = tmp_path / "ledger.log"
    try:
        for kill in range(KILLS):
            process = ledger_process(exchange, ledger_db, log)
            seen = await asyncio.to_thread(count, engine, attempts)

            def more_or_all(seen: int = seen) -> bool:
                # Something more written; or, once the producer is done and every record is
                # in, nothing more can come (on an idle machine the producer can finish first).
                now = count(engine, attempts)
                return now > seen or (producer.done() and now >= RECORDS)

            # Kill it once it has written something more, while records still flow.
            await wait_for(more_or_all, timeout=60)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            assert process.returncode == -signal.SIGKILL, (kill, log.read_text())
        await producer
        before = log.read_text().count("indexing ") if log.exists() else 0
        process = ledger_process(exchange, ledger_db, log)
        await wait_for(lambda: count(engine, attempts) >= RECORDS, timeout=90)
        # SIGTERM once it runs (its signal handlers set): the earlier ones may have written
        # every record already, and a SIGTERM during its start is not the clean stop tested.
        await wait_for(lambda: log.read_text().count("indexing ") > before, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        producer.cancel()
    assert count(engine, attempts) == RECORDS == len(published)
    assert distinct_records(engine) == RECORDS  # 0 doubled
    with engine.connect() as connection:
        stored = set(connection.execute(select(attempts.c.record_id)).scalars())
    assert stored == published  # 0 missing, nothing else
    assert duplicates(engine) == 0  # the offsets alone kept every row single
    engine.dispose()


@pytest.mark.slow
async def test_a_broker_restart_while_indexing_loses_nothing(
    ledger_db: str, exchange: str, healthy_node: RabbitNode
) -> None:
    engine = open_writer(ledger_db)
    streams = await Streams(healthy_node.url, exchange).open()
    try:
        await streams.records(record(f"before-{n}") for n in range(300))
        async with indexing(engine, exchange, ledger_db, amqp_url=healthy_node.url):
            await wait_for(lambda: count(engine, attempts) == 300)
            await streams.close()
            await asyncio.to_thread(healthy_node.stop_app)
            await asyncio.to_thread(healthy_node.start_app)
            streams = await _reopened(healthy_node.url, exchange)
            await streams.records(record(f"after-{n}") for n in range(300))
            await wait_for(lambda: count(engine, attempts) == 600, timeout=90)
    finally:
        await streams.close()
    assert distinct_records(engine) == 600
    assert duplicates(engine) == 0
    engine.dispose()


async def _reopened(url: str, exchange: str) -> Streams:
    """The streams once the restarted node has recovered them: a declare that comes before
    (``start_app`` returns when the node runs, not when its streams are back) is refused
    with NOT_FOUND "home node ... is down", and closes its channel."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        streams = Streams(url, exchange)
        try:
            return await streams.open()
        except aiormq.exceptions.ChannelNotFoundEntity:
            await streams.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)  # polled: the recovery has no event to wait on
