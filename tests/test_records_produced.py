"""Delivery records as the worker, ``dlq replay``, a DLQ discard and ``archive replay`` write
them to ``<exchange>.deliveries`` (contract section 10), and the one audit record of each of
those changes, read back from the real stream."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web
from aiormq.abc import DeliveredMessage

from bridge import PermanentError
from bridge.amqp.deliveries import Acting
from bridge.amqp.topology import dlq_name
from bridge.archive.replay import replay
from bridge.core import metrics
from bridge.core.audit import AUDIT_TYPE, Action, AuditRecord, Via
from bridge.core.records import DeliveryRecord, Outcome, Source, deliveries_stream, record_lines
from bridge.worker.dlq import replay_dead_letters
from bridge.worker.dlq_pick import discard_picked
from bridge.worker.forwarder import Forwarder
from bridge.worker.message import Message
from tests.conftest import AMQP_URL, BridgeFactory, BrokerProbe, bridge_settings
from tests.test_archive import archived_bridge, order_body, post, recent
from tests.test_forwarder import Target
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until


async def read_records(
    probe: BrokerProbe,
    exchange: str,
    until: Callable[[list[DeliveryRecord]], bool],
    timeout: float = 15.0,
    audits: list[AuditRecord] | None = None,
    messages: list[int] | None = None,
) -> list[DeliveryRecord]:
    """The delivery records of ``<exchange>.deliveries`` from its start, once ``until``
    holds; the audit records among them go to ``audits``, and the number of delivery
    records in each message to ``messages``."""
    seen: list[AuditRecord] = [] if audits is None else audits
    messages = [] if messages is None else messages
    connection = probe.connection
    assert connection is not None
    channel = await connection.channel()
    records: list[DeliveryRecord] = []
    try:
        await channel.basic_qos(prefetch_count=100)

        async def take(message: DeliveredMessage) -> None:
            assert message.delivery_tag is not None
            if message.header.properties.message_type == AUDIT_TYPE:
                seen.append(AuditRecord.from_body(message.body))
                await channel.basic_ack(message.delivery_tag)
                return
            assert message.header.properties.message_type == "delivery-record"
            # One record, or the run of one loop turn: the message id is the first one's.
            run = [DeliveryRecord.from_body(line) for line in record_lines(message.body)]
            assert message.header.properties.message_id == run[0].record_id
            records.extend(run)
            messages.append(len(run))
            assert message.delivery_tag is not None
            await channel.basic_ack(message.delivery_tag)

        await channel.basic_consume(
            deliveries_stream(exchange), take, arguments={"x-stream-offset": "first"}
        )
        await wait_until(lambda: until(records), timeout=timeout)
    finally:
        await channel.close()
    return records


def _failed(reason: str) -> float:
    return float(metrics.LEDGER_RECORDS_FAILED.labels(reason)._value.get())


def _count(name: str, outcome: str) -> float:
    return float(metrics.WORKER_MESSAGES.labels(name, outcome)._value.get())


@pytest.fixture
async def target() -> Target:
    return Target()


class EchoTarget(Target):
    """Answers with the key it was sent in its words, as some services do."""

    async def _post(self, request: web.Request) -> web.Response:
        await super()._post(request)
        status = self.status_for("", 1)
        return web.Response(text=f"rejected key {request.headers.get('X-Key')}", status=status)


async def test_500_then_200_records_failed_then_delivered_with_statuses(
    probe: BrokerProbe, exchange: str, target: Target
) -> None:
    probe.track(queues=(deliveries_stream(exchange),))
    target.status_for = lambda message_id, n: 500 if n == 1 else 200
    await target.start()
    sub = subscriber(tries=2)
    forwarder = Forwarder(sub.name, target.url, timeout=5)
    try:
        async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
            sent = await publish(probe, exchange, "despatched", body_for("despatched", 3))
            records = await read_records(probe, exchange, lambda r: len(r) >= 2)
    finally:
        await forwarder.close()
        await target.stop()
    failed, delivered = records
    assert [r.outcome for r in records] == [Outcome.FAILED, Outcome.DELIVERED]
    assert [r.status for r in records] == [500, 200]
    assert [r.attempt for r in records] == [1, 2]
    assert failed.answer is not None and "500" in failed.answer
    for record in records:
        assert record.message_id == sent
        assert record.subscriber == sub.name and record.event == "despatched"
        assert record.order_id is not None and record.order_id.isdigit()
        assert record.source is Source.WORKER and record.operator is None
        assert record.duration_ms is not None and record.duration_ms >= 0
    assert failed.error is not None and "answered 500" in failed.error
    assert delivered.error is None


class ThrottlingTarget(Target):
    """Answers its first POST 429 with ``Retry-After: 1``, then 200."""

    async def _post(self, request: web.Request) -> web.Response:
        await super()._post(request)
        if len(self.requests) == 1:
            return web.json_response({}, status=429, headers={"Retry-After": "1"})
        return web.json_response({})


async def test_a_throttle_records_the_pause_the_subscriber_sits_out(
    probe: BrokerProbe, exchange: str
) -> None:
    probe.track(queues=(deliveries_stream(exchange),))
    target = ThrottlingTarget()
    await target.start()
    sub = subscriber(tries=2)
    forwarder = Forwarder(sub.name, target.url, timeout=5)
    try:
        async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
            await publish(probe, exchange, "despatched", body_for("despatched", 5))
            records = await read_records(probe, exchange, lambda r: len(r) >= 2)
    finally:
        await forwarder.close()
        await target.stop()
    throttled, delivered = records
    assert (throttled.outcome, throttled.status, throttled.retry_after) == (
        Outcome.THROTTLED,
        429,
        1.0,
    )
    assert delivered.outcome is Outcome.DELIVERED and delivered.retry_after is None


async def test_a_400_records_dead_with_its_status_and_a_masked_answer(
    probe: BrokerProbe, exchange: str, target: Target
) -> None:
    probe.track(queues=(deliveries_stream(exchange),))
    secret = "s3cret-header-value"
    target = EchoTarget()
    target.status_for = lambda message_id, n: 400
    await target.start()
    sub = subscriber(tries=3)
    forwarder = Forwarder(sub.name, target.url, timeout=5, headers={"X-Key": secret})
    try:
        async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
            sent = await publish(probe, exchange, "split", body_for("split", 4))
            [record] = await read_records(probe, exchange, lambda r: len(r) >= 1)
            await wait_until(lambda: _count(sub.name, "dead_lettered") == 1)
    finally:
        await forwarder.close()
        await target.stop()
    assert (record.outcome, record.status, record.attempt) == (Outcome.DEAD, 400, 1)
    assert record.message_id == sent
    # The target echoed the key it was sent: the record keeps its words, not the key.
    assert record.answer is not None and "rejected key" in record.answer
    assert secret not in record.answer and "***" in record.answer
    assert record.error is not None and secret not in record.error
    assert record.error is not None and record.error.startswith("PermanentError")
    assert await probe.count(dlq_name(sub.name)) == 1


async def test_a_permanent_error_of_a_handler_records_dead_without_a_status(
    probe: BrokerProbe, exchange: str
) -> None:
    probe.track(queues=(deliveries_stream(exchange),))
    sub = subscriber(tries=3)

    async def refuse(message: Message) -> None:
        raise PermanentError("order 42 is unknown here")

    async with running_worker(probe, exchange, [sub], {sub.name: refuse}):
        sent = await publish(probe, exchange, "cancelled", body_for("cancelled", 5))
        [record] = await read_records(probe, exchange, lambda r: len(r) >= 1)
    assert (record.outcome, record.status, record.answer) == (Outcome.DEAD, None, None)
    assert record.error == "PermanentError: order 42 is unknown here"
    assert (record.message_id, record.attempt, record.event) == (sent, 1, "cancelled")


async def test_dlq_replay_and_discard_record_replayed_and_discarded_with_the_operator(
    probe: BrokerProbe, exchange: str
) -> None:
    probe.track(queues=(deliveries_stream(exchange),))
    sub = subscriber(tries=1, delays=())
    calls: list[int] = []

    async def refuse_first(message: Message) -> None:
        calls.append(message.attempt)
        if len(calls) <= 2:
            raise PermanentError("not yet")

    async with running_worker(probe, exchange, [sub], {sub.name: refuse_first}):
        first = await publish(probe, exchange, "despatched", body_for("despatched", 6))
        second = await publish(probe, exchange, "despatched", body_for("despatched", 7))
        await wait_until(lambda: _count(sub.name, "dead_lettered") == 2)
    urls = bridge_settings(exchange).amqp_urls
    picked = await discard_picked(
        urls, sub.name, [second], Acting(exchange, Source.CONSOLE, "alice")
    )
    assert picked.done == 1
    moved, _queue = await replay_dead_letters(
        urls, sub.name, None, Acting(exchange, Source.DLQ_REPLAY, "bob")
    )
    assert moved == 1
    audits: list[AuditRecord] = []
    records = await read_records(
        probe, exchange, lambda r: len(r) >= 4 and len(audits) >= 2, audits=audits
    )
    by_outcome = {(r.outcome, r.message_id): r for r in records}
    discarded = by_outcome[(Outcome.DISCARDED, second)]
    replayed = by_outcome[(Outcome.REPLAYED, first)]
    assert (discarded.source, discarded.operator) == (Source.CONSOLE, "alice")
    assert (replayed.source, replayed.operator) == (Source.DLQ_REPLAY, "bob")
    assert replayed.subscriber == sub.name and replayed.order_id is not None
    assert await probe.count(sub.name) == 1  # the replayed copy, back in the queue
    # One audit record per change, after it: what, by whom, how many.
    assert [(a.action, a.operator, a.via, a.subscriber, a.count) for a in audits] == [
        (Action.DISCARD, "alice", Via.CLI, sub.name, 1),
        (Action.DLQ_REPLAY, "bob", Via.CLI, sub.name, 1),
    ]


async def test_a_refused_record_is_counted_and_the_message_still_acked(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber()
    handled: list[str] = []

    async def ok(message: Message) -> None:
        handled.append(message.message_id)

    returned = _failed("returned")
    async with running_worker(probe, exchange, [sub], {sub.name: ok}):
        channel = await probe._chan()
        # The stream is gone: the record's publish comes back unroutable.
        await channel.queue_delete(deliveries_stream(exchange))
        sent = await publish(probe, exchange, "despatched", body_for("despatched", 8))
        await wait_until(lambda: _count(sub.name, "acked") == 1)
        await wait_until(lambda: _failed("returned") > returned)
    assert handled == [sent]
    assert await probe.count(sub.name) == 0


async def test_archive_replay_records_each_copy_replayed_by_the_operator(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    probe.track(queues=(deliveries_stream(exchange),))
    bridge = await archived_bridge(make_bridge, probe, exchange)
    body = order_body("despatched", 7070)
    message_id = await post(bridge, "despatched", body)
    target = f"{exchange}.late"
    assert probe.channel is not None
    await probe.channel.queue_declare(target, durable=True, arguments={"x-queue-type": "quorum"})
    probe.track(queues=(target,))
    result = await replay((AMQP_URL,), exchange, recent(), target, operator="carol")
    assert result.sent == 1
    audits: list[AuditRecord] = []
    [record] = await read_records(
        probe, exchange, lambda r: len(r) >= 1 and bool(audits), audits=audits
    )
    [audit] = audits
    assert (audit.action, audit.operator, audit.via, audit.subscriber, audit.count) == (
        Action.ARCHIVE_REPLAY,
        "carol",
        Via.CLI,
        target,
        1,
    )
    assert audit.detail is not None and audit.detail.startswith("received ")
    assert "all events" in audit.detail
    assert (record.outcome, record.source, record.operator) == (
        Outcome.REPLAYED,
        Source.ARCHIVE_REPLAY,
        "carol",
    )
    assert (record.message_id, record.subscriber, record.order_id) == (message_id, target, "7070")
