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

import asyncio
from collections.abc import Collection
from dataclasses import dataclass

from aiormq.abc import AbstractChannel, DeliveredMessage

from bridge.amqp.audit import audit_on
from bridge.amqp.connection import Brokers, borrow
from bridge.amqp.deliveries import Acting
from bridge.amqp.subscriber_target import partitions_exchange
from bridge.amqp.topology import dlq_name
from bridge.core.audit import Action
from bridge.core.records import Outcome as Recorded
from bridge.errors import CommandError
from bridge.worker.dlq import (
    RPC_TIMEOUT,
    _bounded,
    _check,
    _depth,
    _empty,
    _move_back,
    _no_answer,
    put_back,
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
    _check(name)
    wanted = set(ids)
    queue = dlq_name(name)
    found: set[str] = set()
    done = 0
    if not wanted:
        return Picked(queue, 0, ())
    lease = await borrow(broker)
    started = False
    error: CommandError | None = None
    try:
        # An ordered subscriber takes its copies through its partitions exchange.
        exchange = (
            await partitions_exchange(lease.connection, name, RPC_TIMEOUT) if replay else None
        )
        channel = await _bounded(lease.channel(publisher_confirms=True))
        if replay and exchange is None:
            await _depth(channel, name)  # the target queue must exist
        depth = await _depth(channel, queue)
        started = True
        for _ in range(depth):
            got = await channel.basic_get(queue, no_ack=False, timeout=RPC_TIMEOUT)
            if _empty(got):
                break
            message_id = got.header.properties.message_id or ""
            if message_id not in wanted:
                continue  # left unacked: back in the DLQ when the channel closes
            await _act(channel, got, name, replay, exchange, acting)
            found.add(message_id)
            done += 1
        await put_back(lease, channel, queue, depth - done)
    except TimeoutError:
        error = _partial(_no_answer(), done)
        raise error from None
    except CommandError as exc:
        error = _partial(exc, done)
        raise error from None
    finally:
        if acting is not None and started:
            # The change's one audit record (never failing it), once it is over.
            action = Action.DLQ_REPLAY if replay else Action.DISCARD
            stopped = None if error is None else str(error)
            await audit_on(
                lease.connection, acting.exchange, acting.audit(action, name, done, stopped)
            )
        await lease.release()
    return Picked(queue, done, tuple(sorted(wanted - found)))


async def _act(
    channel: AbstractChannel,
    got: DeliveredMessage,
    name: str,
    replay: bool,
    exchange: str | None,
    acting: Acting | None,
) -> None:
    if replay:
        await _move_back(channel, got, name, exchange, acting)
        return
    if acting is not None:
        await record_acted(channel, got, name, Recorded.DISCARDED, acting)
    assert got.delivery_tag is not None
    async with asyncio.timeout(RPC_TIMEOUT):
        await channel.basic_ack(got.delivery_tag)


def _partial(error: CommandError, done: int) -> CommandError:
    if done == 0:
        return error
    return CommandError(f"{error} ({done} done before this)")
