"""A worker outlives a broker restart: it reconnects, re-declares and consumes again."""

from __future__ import annotations

import asyncio

from bridge.amqp.topology import declare, receiver_topology
from bridge.worker.message import Message
from tests.conftest import BrokerProbe, receiver_names
from tests.support.rabbit_node import RabbitNode
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until


async def test_the_worker_consumes_again_after_the_broker_restarts(
    healthy_node: RabbitNode, exchange: str
) -> None:
    probe = BrokerProbe(healthy_node.url)
    await probe.open()
    assert probe.channel is not None
    await declare(probe.channel, receiver_topology(exchange))
    queues, exchanges = receiver_names(exchange)
    probe.track(queues=queues, exchanges=exchanges)
    sub = subscriber()
    got: list[str] = []

    async def keep(message: Message) -> None:
        got.append(message.message_id)

    try:
        async with running_worker(
            probe, exchange, [sub], {sub.name: keep}, amqp_urls=(healthy_node.url,)
        ):
            first = await publish(probe, exchange, "despatched", body_for("despatched", 0))
            await wait_until(lambda: got == [first])
            await asyncio.to_thread(healthy_node.stop_app)
            await asyncio.to_thread(healthy_node.start_app)
            second = await publish(probe, exchange, "despatched", body_for("despatched", 1))
            await wait_until(lambda: second in got, timeout=30)
        assert got == [first, second]
        assert await probe.count(sub.name) == 0
    finally:
        await probe.cleanup()
