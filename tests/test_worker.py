"""Subscribers against the real broker: fan-out, in-process retries, the delayed ladder, the
dead-letter queue with the contract's headers, and PermanentError."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import datetime

import pytest

from bridge import PermanentError
from bridge.amqp.topology import dlq_name
from bridge.core import metrics
from bridge.core.contract import webhook_envelope
from bridge.errors import CommandError
from bridge.examples.log_events import log_event
from bridge.worker.message import Message
from tests.conftest import BrokerProbe, fixture_body
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until


def _count(name: str, outcome: str) -> float:
    return metrics.WORKER_MESSAGES.labels(name, outcome)._value.get()


async def test_two_subscribers_with_overlapping_events_each_get_every_match_once(
    probe: BrokerProbe, exchange: str
) -> None:
    erp = subscriber(events=("despatched", "cancelled"))
    everything = subscriber(events=("*",))
    seen: dict[str, list[str]] = {erp.name: [], everything.name: []}

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def handle(message: Message) -> None:
            assert message.body.strip() == fixture_body(message.event).strip()
            seen[name].append(message.message_id)

        return handle

    handlers = {sub.name: recorder(sub.name) for sub in (erp, everything)}
    async with running_worker(probe, exchange, [erp, everything], handlers):
        ids: dict[str, list[str]] = {}
        for event, n in (("despatched", 3), ("cancelled", 2), ("delivered", 2), ("split", 1)):
            ids[event] = [
                await publish(probe, exchange, event, body_for(event, i)) for i in range(n)
            ]
        wanted_erp = ids["despatched"] + ids["cancelled"]
        wanted_all = [i for group in ids.values() for i in group]
        await wait_until(
            lambda: (
                len(seen[erp.name]) >= len(wanted_erp)
                and len(seen[everything.name]) >= len(wanted_all)
            )
        )
        # Nothing more arrives: a last message for both, handled after any duplicate.
        sentinel = await publish(probe, exchange, "despatched", body_for("despatched", 99))
        await wait_until(lambda: all(sentinel in ids_seen for ids_seen in seen.values()))
    assert Counter(seen[erp.name]) == Counter([*wanted_erp, sentinel])
    assert Counter(seen[everything.name]) == Counter([*wanted_all, sentinel])
    for sub in (erp, everything):
        assert await probe.count(sub.name) == 0
        assert await probe.count(dlq_name(sub.name)) == 0
    assert _count(erp.name, "acked") == len(wanted_erp) + 1


async def test_failing_twice_then_succeeding_is_acked_on_the_third_in_process_try(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=3)
    attempts: list[int] = []

    async def flaky(message: Message) -> None:
        attempts.append(message.attempt)
        if len(attempts) < 3:
            raise ConnectionError("ERP busy")

    async with running_worker(probe, exchange, [sub], {sub.name: flaky}):
        await publish(probe, exchange, "despatched", body_for("despatched", 0))
        await wait_until(lambda: _count(sub.name, "acked") == 1)
    assert attempts == [1, 2, 3]
    assert _count(sub.name, "retried") == 0
    assert await probe.count(sub.name) == 0
    assert await probe.count(dlq_name(sub.name)) == 0


async def test_the_ladder_redelivers_with_x_attempt_and_the_same_message_id(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=1, delays=(200, 200))
    calls: list[tuple[int, str, object]] = []

    async def flaky(message: Message) -> None:
        calls.append((message.attempt, message.message_id, message.headers.get("x-attempt")))
        if len(calls) < 3:
            raise RuntimeError("not yet")

    async with running_worker(probe, exchange, [sub], {sub.name: flaky}):
        sent = await publish(probe, exchange, "cancelled", body_for("cancelled", 0))
        await wait_until(lambda: _count(sub.name, "acked") == 1)
    assert calls == [(1, sent, None), (2, sent, 2), (3, sent, 3)]
    assert _count(sub.name, "retried") == 2


async def test_an_always_failing_handler_ends_in_the_dlq_with_the_contract_headers(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=2, delays=(200, 200))
    attempts: list[int] = []

    async def broken(message: Message) -> None:
        attempts.append(message.attempt)
        raise ValueError("ERP rejected order " + "é" * 2000)

    body = body_for("despatched", 0)
    async with running_worker(probe, exchange, [sub], {sub.name: broken}):
        sent = await publish(probe, exchange, "despatched", body)
        await wait_until(lambda: _count(sub.name, "dead_lettered") == 1)
    # 2 in-process tries on each of 3 deliveries: the first and one per ladder step.
    assert attempts == [1, 2, 3, 4, 5, 6]
    [dead] = await probe.get_all(dlq_name(sub.name), expected=1)
    properties = dead.header.properties
    headers = properties.headers or {}
    assert dead.body == body
    assert properties.message_id == sent
    assert properties.message_type == "despatched"
    assert properties.delivery_mode == 2
    assert headers["x-attempt"] == 3
    error = headers["x-error"]
    error = error.decode() if isinstance(error, bytes) else error
    assert error.startswith("ValueError: ERP rejected order é")
    assert len(error.encode()) <= 1024
    failed_at = headers["x-failed-at"]
    failed_at = failed_at.decode() if isinstance(failed_at, bytes) else failed_at
    assert datetime.fromisoformat(failed_at.replace("Z", "+00:00")).tzinfo is not None
    assert "x-order-id" in headers and "x-request-id" in headers
    for step in range(2):
        assert await probe.count(f"{sub.name}.retry.{step}") == 0
    assert await probe.count(sub.name) == 0


async def test_permanent_error_goes_straight_to_the_dlq(probe: BrokerProbe, exchange: str) -> None:
    sub = subscriber(tries=3, delays=(200,))
    calls: list[int] = []

    async def refuse(message: Message) -> None:
        calls.append(message.attempt)
        raise PermanentError("order has no lines")

    async with running_worker(probe, exchange, [sub], {sub.name: refuse}):
        await publish(probe, exchange, "split", body_for("split", 0))
        await wait_until(lambda: _count(sub.name, "dead_lettered") == 1)
    assert calls == [1]
    assert _count(sub.name, "retried") == 0
    [dead] = await probe.get_all(dlq_name(sub.name), expected=1)
    headers = dead.header.properties.headers or {}
    assert headers["x-attempt"] == 1
    error = headers["x-error"]
    assert (error.decode() if isinstance(error, bytes) else error) == (
        "PermanentError: order has no lines"
    )


async def test_a_handler_that_hangs_is_timed_out_and_retried(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=2, delays=(), timeout=0.2)
    calls: list[int] = []

    async def hangs_once(message: Message) -> None:
        calls.append(message.attempt)
        if len(calls) == 1:
            await asyncio.Event().wait()  # hangs until cancelled

    async with running_worker(probe, exchange, [sub], {sub.name: hangs_once}):
        await publish(probe, exchange, "delivered", body_for("delivered", 0))
        await wait_until(lambda: _count(sub.name, "acked") == 1)
    assert calls == [1, 2]


async def test_stopping_lets_an_in_flight_handler_finish_and_ack(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber()
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(message: Message) -> None:
        started.set()
        await asyncio.sleep(0.4)
        finished.set()

    async with running_worker(probe, exchange, [sub], {sub.name: slow}):
        await publish(probe, exchange, "despatched", body_for("despatched", 0))
        await asyncio.wait_for(started.wait(), 10)
    # Leaving the block stopped the worker while the handler was running.
    assert finished.is_set()
    assert _count(sub.name, "acked") == 1
    assert await probe.count(sub.name) == 0


@pytest.mark.parametrize("event", ["despatched", "split"])
async def test_the_handler_sees_event_body_json_and_order_headers(
    probe: BrokerProbe, exchange: str, event: str
) -> None:
    sub = subscriber(events=(event,))
    got: list[Message] = []

    async def keep(message: Message) -> None:
        got.append(message)

    async with running_worker(probe, exchange, [sub], {sub.name: keep}):
        sent = await publish(probe, exchange, event, fixture_body(event))
        await wait_until(lambda: len(got) == 1)
    [message] = got
    assert message.event == event
    assert message.routing_key == f"order.{event}"
    assert message.body == fixture_body(event)
    assert message.message_id == sent
    assert message.json is not None
    assert message.order_id
    assert message.request_id and message.request_id.startswith("req-")
    assert message.attempt == 1


async def test_a_ladder_that_clashes_with_existing_queues_stops_the_worker_with_one_line(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(delays=(200,))
    probe.track(queues=(f"{sub.name}.retry.0",))
    channel = await probe._chan()
    await channel.queue_declare(
        f"{sub.name}.retry.0",
        durable=True,
        arguments={"x-queue-type": "quorum", "x-message-ttl": 5000},
    )

    async def never(message: Message) -> None:
        raise AssertionError("no message expected")

    with pytest.raises(CommandError) as raised:
        async with running_worker(probe, exchange, [sub], {sub.name: never}):
            pass
    assert "other arguments" in str(raised.value)
    assert "\n" not in str(raised.value)


async def test_the_example_handler_logs_every_event_with_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = Message(
        event="despatched",
        body=fixture_body("despatched"),
        message_id="m1",
        headers={"x-order-id": "1001", "x-request-id": "r1"},
        subscriber="log-events",
    )
    with caplog.at_level(logging.INFO, logger="bridge.examples.log_events"):
        await log_event(message)
    [record] = caplog.records
    assert "despatched" in record.getMessage() and "1001" in record.getMessage()
    assert (record.subscriber, record.message_id, record.request_id) == ("log-events", "m1", "r1")  # type: ignore[attr-defined]


async def test_a_message_in_a_crash_loop_goes_to_the_dlq_untried(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber()
    calls: list[str] = []

    async def handler(message: Message) -> None:
        calls.append(message.message_id)

    body = body_for("despatched", 0)
    envelope = webhook_envelope("despatched", body, None, "req-crash", time.time())
    properties = envelope.properties()
    # What a quorum queue says of a message it handed out 20 times with no ack or nack.
    properties.headers = {**(properties.headers or {}), "x-delivery-count": 20}
    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        channel = await probe._chan()
        await channel.basic_publish(
            body, exchange=exchange, routing_key="order.despatched", properties=properties
        )
        await wait_until(lambda: _count(sub.name, "dead_lettered") == 1)
        healthy = await publish(probe, exchange, "despatched", body_for("despatched", 1))
        await wait_until(lambda: _count(sub.name, "acked") == 1)
    assert calls == [healthy]
    [dead] = await probe.get_all(dlq_name(sub.name), expected=1)
    error = (dead.header.properties.headers or {})["x-error"]
    assert "CrashLoop: delivered 20 times" in (
        error.decode() if isinstance(error, bytes) else error
    )


async def test_a_message_whose_retry_copy_is_not_confirmed_is_never_acked(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=1, delays=(200,))

    async def broken(message: Message) -> None:
        raise RuntimeError("down")

    async with running_worker(probe, exchange, [sub], {sub.name: broken}):
        channel = await probe._chan()
        await channel.queue_delete(f"{sub.name}.retry.0")  # the copy is now unroutable
        await publish(probe, exchange, "despatched", body_for("despatched", 0))
        await wait_until(lambda: _count(sub.name, "consumed") >= 2)  # kept, tried again
        assert _count(sub.name, "retried") == 0

    async def back_in_the_queue() -> bool:
        return await probe.count(sub.name) == 1

    await wait_until(back_in_the_queue, timeout=5)
    assert await probe.count(dlq_name(sub.name)) == 0
