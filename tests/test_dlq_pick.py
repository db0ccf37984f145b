"""Replay or discard picked dead letters by message id: only those move, the rest stay."""

from __future__ import annotations

from bridge import PermanentError
from bridge.amqp.topology import dlq_name
from bridge.worker.dlq import list_dead_letters
from bridge.worker.dlq_pick import discard_picked, replay_picked
from bridge.worker.message import Message
from tests.conftest import BrokerProbe, bridge_settings
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until


async def test_replay_and_discard_only_the_picked_dead_letters(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=1, delays=())
    healthy = False
    handled: list[str] = []

    async def handler(message: Message) -> None:
        if not healthy:
            raise PermanentError("ERP says no")
        handled.append(message.message_id)

    urls = bridge_settings(exchange).amqp_urls
    dlq = dlq_name(sub.name)
    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        ids = [
            await publish(probe, exchange, "despatched", body_for("despatched", i))
            for i in range(4)
        ]

        async def dead(n: int) -> bool:
            return await probe.count(dlq) == n

        await wait_until(lambda: dead(4))
        healthy = True

        replayed = await replay_picked(urls, sub.name, [ids[1], "0" * 32])
        assert (replayed.done, replayed.missing) == (1, ("0" * 32,))
        await wait_until(lambda: handled == [ids[1]])

        discarded = await discard_picked(urls, sub.name, {ids[2]})
        assert (discarded.done, discarded.missing) == (1, ())
        await wait_until(lambda: dead(2))
        left = await list_dead_letters(urls, sub.name, None)
        assert sorted(m.header.properties.message_id or "" for m in left.messages) == sorted(
            [ids[0], ids[3]]
        )
        assert handled == [ids[1]]  # the discarded one was never delivered
        assert (await replay_picked(urls, sub.name, [])).done == 0
