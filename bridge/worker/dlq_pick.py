"""Picked dead letters: replay or discard the dead letters of a subscriber that carry given
message ids (the console's "replay one", "replay selection" and "discard").

The DLQ is read with ``basic.get`` without acking, at most as many messages as it held when
the call began. A picked message is acted on (replayed: its copy confirmed in ``<name>``
before the dead letter is acked; discarded: acked); every other message stays unacked and
goes back to the DLQ when the channel closes. An interrupted call therefore loses nothing:
at worst a message in flight is in both queues. Given an ``acting`` (who acts), each message
acted on leaves a delivery record, and the call one audit record (how many; why it stopped).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from aiormq.abc import AbstractChannel, DeliveredMessage

from bridge.amqp.connection import Brokers
from bridge.amqp.deliveries import Acting
from bridge.amqp.subscriber_target import partitions_exchange
from bridge.amqp.topology import dlq_name
from bridge.core.audit import Action
from bridge.core.records import Outcome as Recorded
from bridge.core.tasks import within
from bridge.worker.dlq import (
    RPC_TIMEOUT,
    acting_on,
    check_name,
    got_empty,
    move_back,
    put_back,
    queue_depth,
    record_acted,
)


@dataclass(frozen=True)
class Picked:
    """What a pick did: how many dead letters matched and were acted on, and the queue."""

    queue: str
    done: int
    missing: tuple[str, ...]
    """Ids asked for but not found (replayed or discarded by someone else meanwhile)."""


async def replay_picked(
    broker: Brokers, name: str, ids: Collection[str], acting: Acting | None = None
) -> Picked:
    """Move every dead letter of ``name`` whose message id is in ``ids`` back to ``name``
    (given ``acting``, each leaves a ``replayed`` delivery record)."""
    return await _pick(broker, name, ids, replay=True, acting=acting)


async def discard_picked(
    broker: Brokers, name: str, ids: Collection[str], acting: Acting | None = None
) -> Picked:
    """Delete every dead letter of ``name`` whose message id is in ``ids`` (given
    ``acting``, each leaves a ``discarded`` delivery record, sent before its ack)."""
    return await _pick(broker, name, ids, replay=False, acting=acting)


async def _pick(
    broker: Brokers,
    name: str,
    ids: Collection[str],
    *,
    replay: bool,
    acting: Acting | None,
) -> Picked:
    check_name(name)
    wanted = set(ids)
    queue = dlq_name(name)
    found: set[str] = set()
    if not wanted:
        return Picked(queue, 0, ())
    action = Action.DLQ_REPLAY if replay else Action.DISCARD
    async with acting_on(broker, name, action, acting, "done") as change:
        # An ordered subscriber takes its copies through its partitions exchange.
        exchange = (
            await partitions_exchange(change.lease.connection, name, RPC_TIMEOUT)
            if replay
            else None
        )
        channel = await within(RPC_TIMEOUT, change.lease.channel(publisher_confirms=True))
        if replay and exchange is None:
            await queue_depth(channel, name)  # the target queue must exist
        depth = await queue_depth(channel, queue)
        change.begun = True
        for _ in range(depth):
            got = await within(RPC_TIMEOUT, channel.basic_get(queue, no_ack=False))
            if got_empty(got):
                break
            message_id = got.header.properties.message_id or ""
            if message_id not in wanted:
                continue  # left unacked: back in the DLQ when the channel closes
            await _act(channel, got, name, replay, exchange, acting)
            found.add(message_id)
            change.done += 1
        await put_back(change.lease, channel, queue, depth - change.done)
    return Picked(queue, change.done, tuple(sorted(wanted - found)))


async def _act(
    channel: AbstractChannel,
    got: DeliveredMessage,
    name: str,
    replay: bool,
    exchange: str | None,
    acting: Acting | None,
) -> None:
    if replay:
        await move_back(channel, got, name, exchange, acting)
        return
    if acting is not None:
        await record_acted(channel, got, name, Recorded.DISCARDED, acting)
    assert got.delivery_tag is not None
    await within(RPC_TIMEOUT, channel.basic_ack(got.delivery_tag))
