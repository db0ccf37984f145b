"""What a handler and an operator see of a message on its way along the retry ladder: the
webhook's own routing key on every delivery, and worker log lines that carry the message's
fields in text format too, with one traceback per message at most."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

from bridge import PermanentError
from bridge.core import metrics
from bridge.core.logs import TextFormatter
from bridge.worker.dlq import replay_dead_letters
from bridge.worker.message import Message
from tests.conftest import BrokerProbe, bridge_settings
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until


@contextlib.contextmanager
def _worker_log() -> Iterator[io.StringIO]:
    """The worker's INFO log lines in text format, while the block runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("bridge.worker")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _count(name: str, outcome: str) -> float:
    return metrics.WORKER_MESSAGES.labels(name, outcome)._value.get()


async def test_routing_key_stays_the_webhooks_across_retries_and_a_replay(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=1, delays=(200,))
    seen: list[tuple[str, str]] = []

    async def handler(message: Message) -> None:
        seen.append((message.routing_key, message.delivery_routing_key))
        if len(seen) == 1:
            raise RuntimeError("first try fails: one step along the ladder")
        if len(seen) == 2:
            raise PermanentError("second try: to the DLQ")

    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        await publish(probe, exchange, "despatched", body_for("despatched", 0))
        await wait_until(lambda: _count(sub.name, "dead_lettered") == 1)
        moved, _ = await replay_dead_letters(bridge_settings(exchange).amqp_urls, sub.name, None)
        assert moved == 1
        await wait_until(lambda: _count(sub.name, "acked") == 1)
    assert [key for key, _ in seen] == ["order.despatched"] * 3
    # Where this copy came from is still there, under another name: the queue's name after
    # the retry step (it dead-letters back to the queue) and after the replay.
    assert [current for _, current in seen] == ["order.despatched", sub.name, sub.name]


async def test_text_logs_carry_the_message_fields_and_one_traceback_per_message(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=2, delays=(200, 200))

    async def broken(message: Message) -> None:
        raise ValueError("ERP is down")

    with _worker_log() as stream:
        async with running_worker(probe, exchange, [sub], {sub.name: broken}):
            sent = await publish(probe, exchange, "despatched", body_for("despatched", 0))
            await wait_until(lambda: _count(sub.name, "dead_lettered") == 1)
    text = stream.getvalue()
    about = [line for line in text.splitlines() if f"message_id={sent}" in line]
    # 2 tries on each of 3 deliveries, 2 retry steps, 1 dead letter.
    assert len(about) == 6 + 2 + 1, text
    for line in about:
        for field in ("subscriber=" + sub.name, "order_id=", "request_id=req-", "attempt="):
            assert field in line, (field, line)
    assert text.count("Traceback (most recent call last)") == 1, text
    dead = text.split("dead-lettered to", 1)[1]
    assert "Traceback (most recent call last)" in dead and "ValueError: ERP is down" in dead
    assert "moved to" in text and "): ValueError: ERP is down" in text


async def test_a_handled_delivered_webhook_is_logged_without_the_word_twice(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=1, delays=(200,))

    async def fine(message: Message) -> None:
        return None

    with _worker_log() as stream:
        async with running_worker(probe, exchange, [sub], {sub.name: fine}):
            sent = await publish(probe, exchange, "delivered", body_for("delivered", 0))
            await wait_until(lambda: _count(sub.name, "acked") == 1)
    [line] = [line for line in stream.getvalue().splitlines() if f"message_id={sent}" in line]
    assert "delivered webhook handled" in line and "delivered delivered" not in line, line
