"""The ledger's lean stream consumer on the real broker: deliveries are taken off the wire
(never through aiormq's consumer), acks with ``multiple`` give the credit back batch by
batch, a connection reset mid-stream loses and doubles nothing, aiormq keeps seeing
heartbeats while only deliveries arrive, and without the splitter aiormq's path writes the
same rows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiormq
import pytest
from aiormq.abc import AbstractChannel
from sqlalchemy import func, select

from bridge.core.records import deliveries_stream
from bridge.ledger import consumer, indexer
from bridge.ledger.consumer import SplittingTransport, consume
from bridge.ledger.database import open_writer
from bridge.ledger.deliveries_wire import HEARTBEAT_FRAME, Consumer, Delivery, FrameSplitter
from bridge.ledger.schema import attempts, stream_offsets
from tests.conftest import AMQP_URL
from tests.support.ledger_index import count, indexing, wait_for
from tests.support.ledger_streams import Streams, record
from tests.support.tcp_proxy import TcpProxy


async def test_acks_with_multiple_give_the_credit_back_batch_by_batch(
    exchange: str, streams: Streams
) -> None:
    await streams.records(record(f"msg-{n}") for n in range(30))
    transport = SplittingTransport()
    connection = await aiormq.connect(AMQP_URL, transport_factory=transport)
    got: list[Delivery] = []
    most_before_ack: list[int] = []
    arrived = asyncio.Event()
    lost: list[AbstractChannel] = []

    def on(_channel: AbstractChannel) -> Any:
        def take(delivery: Delivery) -> None:
            got.append(delivery)
            arrived.set()

        return take

    try:
        splitter = transport.latest
        assert isinstance(splitter, FrameSplitter)
        channel = await consume(
            connection, splitter, deliveries_stream(exchange), 0, 10, on, lost.append
        )
        acked = 0
        while acked < 30:
            async with asyncio.timeout(10):
                while len(got) < acked + 10:
                    arrived.clear()
                    await arrived.wait()
            # No more than the prefetch beyond what was acked: the credit is the acks'.
            most_before_ack.append(len(got) - acked)
            acked = len(got)
            await channel.basic_ack(got[-1].tag, multiple=True)
        assert [d.offset for d in got] == list(range(30))
        assert [d.tag for d in got] == list(range(1, 31))
        assert most_before_ack == [10, 10, 10]
        assert splitter.taken == 30 and not splitter.broken  # none went through aiormq
    finally:
        await connection.close()
    assert lost == [channel]  # its channel closed with the connection: reported


async def test_a_connection_reset_mid_stream_loses_and_doubles_nothing(
    ledger_db: str, exchange: str, streams: Streams, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    engine = open_writer(ledger_db)
    total = 0
    try:
        async with indexing(
            engine, exchange, ledger_db, amqp_url=proxy.url, batch_rows=50, prefetch=100
        ) as running:
            # Each round's 150th message resets the connection it arrives on, as it arrives
            # (the round's first half pending or written, the rest to come): mid-stream and
            # mid-batch however fast the indexer is. (The indexer has not connected yet.)
            resets = [asyncio.Event() for _ in range(3)]
            consumer_for = running._consumer

            def resetting(stream: Any) -> Callable[[AbstractChannel], Consumer]:
                def on(channel: AbstractChannel) -> Consumer:
                    arrive = consumer_for(stream)(channel)

                    def tap(delivery: Delivery) -> None:
                        arrive(delivery)
                        round_, n = divmod(delivery.offset, 300)
                        if n == 150 and round_ < 3 and not resets[round_].is_set():
                            resets[round_].set()
                            proxy.reset_all()

                    return tap

                return on

            monkeypatch.setattr(running, "_consumer", resetting)
            for reset in range(3):
                await streams.records(record(f"msg-{reset}-{n}") for n in range(300))
                total += 300
                async with asyncio.timeout(30):
                    await resets[reset].wait()
            # And on the last connection, through its splitter too.
            await streams.records(record(f"msg-after-{n}") for n in range(10))
            total += 10
            await wait_for(lambda: count(engine, attempts) == total, timeout=60)
            splitter = running._transport.latest if running._transport else None
            assert splitter is not None and splitter.taken >= 10
    finally:
        await proxy.close()
    assert proxy.accepted >= 4  # it reconnected after every reset
    with engine.connect() as connection:
        distinct = connection.execute(select(func.count(attempts.c.record_id.distinct())))
        assert distinct.scalar() == total
        duplicates = connection.execute(select(func.sum(stream_offsets.c.duplicates)))
        assert duplicates.scalar() == 0  # the offsets alone kept every row single
    engine.dispose()


async def test_messages_of_several_records_become_every_row_once_across_restarts(
    ledger_db: str, exchange: str, streams: Streams
) -> None:
    # The worker's records of one loop turn are one message: a stream offset covers several
    # rows. Connection resets mid-stream and indexer restarts must still write each once.
    runs = [[record(f"msg-{n}-{k}") for k in range(1 + n % 7)] for n in range(120)]
    total = sum(len(run) for run in runs)
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    engine = open_writer(ledger_db)
    try:
        for start in range(0, len(runs), 40):  # three indexers, one after the other
            async with indexing(
                engine, exchange, ledger_db, amqp_url=proxy.url, batch_rows=10, prefetch=20
            ):
                seen = await asyncio.to_thread(count, engine, attempts)
                await streams.record_runs(runs[start : start + 40])
                await wait_for(lambda seen=seen: count(engine, attempts) > seen)  # type: ignore[misc]
                proxy.reset_all()  # mid-stream, most likely mid-batch
            # Stopped (maybe before it read its 40 messages): the next one reads on.
        async with indexing(engine, exchange, ledger_db, amqp_url=proxy.url, batch_rows=10):
            await wait_for(lambda: count(engine, attempts) == total, timeout=60)
    finally:
        await proxy.close()
    with engine.connect() as connection:
        rows = connection.execute(select(attempts.c.record_id, attempts.c.stream_offset)).all()
        offsets = connection.execute(
            select(stream_offsets).where(stream_offsets.c.stream == deliveries_stream(exchange))
        ).one()
    engine.dispose()
    assert sorted(r.record_id for r in rows) == sorted(o.record_id for run in runs for o in run)
    per_offset: dict[int, int] = {}
    for row in rows:
        per_offset[row.stream_offset] = per_offset.get(row.stream_offset, 0) + 1
    assert per_offset == {n: len(run) for n, run in enumerate(runs)}  # each message whole
    assert (offsets.last_offset, offsets.duplicates, offsets.malformed) == (119, 0, 0)


async def test_without_the_splitter_aiormq_delivers_the_same_rows(
    ledger_db: str,
    exchange: str,
    streams: Streams,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(indexer, "consumer_check", lambda: "aiormq 9: changed")
    engine = open_writer(ledger_db)
    await streams.records(record(f"msg-{n}") for n in range(40))
    with caplog.at_level(logging.WARNING, logger="bridge.ledger"):
        async with indexing(engine, exchange, ledger_db, batch_rows=7) as running:
            assert running._transport is None
            await wait_for(lambda: count(engine, attempts) == 40)
    assert "read through aiormq, slower (aiormq 9: changed)" in caplog.text
    engine.dispose()


def test_this_aiormq_takes_the_transport_factory() -> None:
    assert consumer.check() is None


async def test_aiormq_is_handed_a_heartbeat_while_only_deliveries_arrive() -> None:
    from tests.test_ledger_wire import deliver

    now = [1000.0]
    splitter = FrameSplitter()
    got: list[Delivery] = []
    splitter.take(1, got.append)
    reader = consumer._SplittingReader(splitter, asyncio.get_running_loop(), lambda: now[0])

    def waiting() -> bytes:
        return bytes(reader._buffer)  # type: ignore[attr-defined]  # what aiormq has yet to read

    reader.feed_data(deliver(1, 1, b"a"))
    assert len(got) == 1 and waiting() == b""  # taken, nothing for aiormq
    now[0] += consumer.HEARTBEAT_EVERY
    reader.feed_data(deliver(1, 2, b"b"))
    assert len(got) == 2 and waiting() == HEARTBEAT_FRAME
    reader.feed_data(deliver(1, 3, b"c"))  # within the second: no other
    assert waiting() == HEARTBEAT_FRAME
    reader.feed_data(deliver(2, 1, b"d"))  # a channel not taken: aiormq's
    assert waiting() == HEARTBEAT_FRAME + deliver(2, 1, b"d")
