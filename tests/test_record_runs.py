"""The worker's delivery records travel in runs: the records one channel makes in one loop
turn leave as one ``<exchange>.deliveries`` message (their JSON joined by newlines) before
that turn's acks; a run of one is the lone record's message as before; a run the broker
refuses counts each of its records in ``bridge_ledger_records_failed_total``."""

from __future__ import annotations

import asyncio

import pytest
from aiormq.abc import DeliveredMessage

from bridge.amqp.deliveries import RUN_RECORDS, add_record
from bridge.core.records import deliveries_stream, record_lines
from bridge.worker.message import Message
from tests.conftest import AMQP_URL, BrokerProbe
from tests.support.ledger_streams import Streams, record, stream_names
from tests.test_records_produced import _count, _failed, read_records
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until


async def test_the_records_of_one_turn_are_one_message_and_a_lone_one_is_as_before(
    probe: BrokerProbe, exchange: str
) -> None:
    queues, exchanges = stream_names(exchange)
    probe.track(queues=queues, exchanges=exchanges)
    streams = await Streams(AMQP_URL, exchange).open()
    await streams.close()
    assert probe.connection is not None
    channel = await probe.connection.channel()  # a confirm channel, as the worker's
    made = [record(f"msg-{n}", attempt=n + 1) for n in range(RUN_RECORDS + 2)]
    for one in made:  # one loop turn: a full run leaves at once, the rest at the turn's end
        add_record(channel, exchange, one.record_id, one.to_body())
    await asyncio.sleep(0)  # the next turn (a lone record alone in its run)
    lone = record("msg-lone")
    add_record(channel, exchange, lone.record_id, lone.to_body())
    sizes: list[int] = []
    got = await read_records(probe, exchange, lambda r: len(r) == len(made) + 1, messages=sizes)
    assert got == [*made, lone]  # every record, in order
    assert sizes == [RUN_RECORDS, 2, 1]

    # The lone record's message is what one record always was: its body, its id.
    raw: list[tuple[bytes, str | None]] = []
    reader = await probe.connection.channel()
    await reader.basic_qos(prefetch_count=10)

    async def take(message: DeliveredMessage) -> None:
        raw.append((message.body, message.header.properties.message_id))

    await reader.basic_consume(
        deliveries_stream(exchange), take, arguments={"x-stream-offset": "last"}
    )
    await wait_until(lambda: bool(raw))
    await reader.close()
    assert raw[-1] == (lone.to_body(), lone.record_id)
    assert record_lines(raw[-1][0]) == [lone.to_body()]


async def test_on_the_public_path_each_record_is_a_message_of_its_own(
    probe: BrokerProbe, exchange: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiormq's public API acks one by one at once: a run left for the turn's end would
    # follow the acks, so each record leaves at once, as before.
    monkeypatch.setenv("BRIDGE_PUBLISH_PATH", "public")
    queues, exchanges = stream_names(exchange)
    probe.track(queues=queues, exchanges=exchanges)
    await (await Streams(AMQP_URL, exchange).open()).close()
    assert probe.connection is not None
    channel = await probe.connection.channel()
    made = [record(f"msg-{n}") for n in range(3)]
    for one in made:
        add_record(channel, exchange, one.record_id, one.to_body())
    sizes: list[int] = []
    assert await read_records(probe, exchange, lambda r: len(r) == 3, messages=sizes) == made
    assert sizes == [1, 1, 1]


class Held:
    """A handler holding every message until :meth:`release`: the handlers then return in
    one loop turn, and their records make one run."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.go = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.arrived.append(message.message_id)
        await self.go.wait()

    async def release(self, probe: BrokerProbe, exchange: str, name: str, count: int) -> list[str]:
        """Publish ``count`` webhooks, let them all arrive, release them together and wait
        for their acks; their message ids."""
        sent = [
            await publish(probe, exchange, "despatched", body_for("despatched", n))
            for n in range(count)
        ]
        await wait_until(lambda: len(self.arrived) == count)
        self.go.set()
        await wait_until(lambda: _count(name, "acked") == count)
        return sent


async def test_a_worker_sends_the_records_of_one_turn_as_one_message(
    probe: BrokerProbe, exchange: str
) -> None:
    probe.track(queues=(deliveries_stream(exchange),))
    sub = subscriber(prefetch=32)
    held = Held()
    async with running_worker(probe, exchange, [sub], {sub.name: held}):
        sent = await held.release(probe, exchange, sub.name, 20)
        sizes: list[int] = []
        records = await read_records(probe, exchange, lambda r: len(r) >= 20, messages=sizes)
    assert sorted(r.message_id for r in records) == sorted(sent)
    assert sizes == [20]  # the twenty records of one loop turn: one message


async def test_a_refused_run_counts_each_of_its_records(probe: BrokerProbe, exchange: str) -> None:
    sub = subscriber(prefetch=32)
    held = Held()
    returned = _failed("returned")
    async with running_worker(probe, exchange, [sub], {sub.name: held}):
        channel = await probe._chan()
        # The stream is gone: the run's one publish comes back unroutable.
        await channel.queue_delete(deliveries_stream(exchange))
        await held.release(probe, exchange, sub.name, 6)
        # Each record of the one message is counted, not the message once.
        await wait_until(lambda: _failed("returned") == returned + 6)
    assert await probe.count(sub.name) == 0
