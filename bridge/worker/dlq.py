"""A subscriber's dead letters: what a subscriber dead-lettered, and moving it
back to the subscriber's queue.

Listing takes each message without acking it, so closing the channel puts every one back,
and returns what it read oldest first (by ``x-failed-at``, then message id): a quorum queue
hands back requeued messages in no set order, so the queue's own order changes with every
read, and a listing must not.
Replaying publishes a copy to ``<name>`` (via the default exchange, so no other subscriber
sees it again; for an ordered subscriber via its ``<name>.partitions`` exchange, so each
message joins its order's partition, behind what is already queued there), waits for the
broker's confirm, and only then acks the dead letter: an interrupted replay loses nothing
(at worst a message in flight is in both queues).

A change on a subscriber's dead letters (the replay here, a pick in
:mod:`bridge.worker.dlq_pick`) runs in :func:`acting_on`: a failure part-way is a
:class:`CommandError` saying how many messages were done before it, and the change leaves
one audit record once it is over (given who acts).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp.commands import Basic

from bridge.amqp.audit import audit_on
from bridge.amqp.connection import Borrowed, Brokers, borrow, close_quietly
from bridge.amqp.deliveries import Acting, write_record
from bridge.amqp.publisher import Outcome, confirms
from bridge.amqp.subscriber_target import partitions_exchange, route
from bridge.amqp.topology import dlq_name
from bridge.core.audit import Action
from bridge.core.contract import HEADER_ORDER_ID, HEADER_ORDER_NUMBER
from bridge.core.records import Outcome as Recorded
from bridge.core.secrets import mask
from bridge.core.settings import SettingsError
from bridge.core.tasks import within
from bridge.errors import CommandError
from bridge.worker.message import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    copy_properties,
    delivery_number,
    event_of,
    plain_headers,
)
from bridge.worker.subscribers import NAME_PATTERN

PUBLISH_TIMEOUT = 10.0

RPC_TIMEOUT = 10.0
"""Seconds any other broker call may take (bounded by :func:`~bridge.core.tasks.within`, so
a cancel is never lost): a broker that stops answering is an error, never a command that
hangs."""
REPLAY_WINDOW = 64
REPLAY_IDLE = 1.0
PUT_BACK_WAIT = 2.0
"""Seconds a call waits, once its channel is closed, for the broker to have put back what
the channel held (a quorum queue takes them back asynchronously), so that a read right
after it sees them."""


def check_name(name: str) -> None:
    """Refuse ``name`` unless it can be a subscriber's name (:class:`SettingsError`)."""
    if not NAME_PATTERN.match(name):
        raise SettingsError(
            f"NAME {name!r} is not a subscriber name: use the name = ... of its [[subscriber]]"
        )


async def queue_depth(channel: AbstractChannel, queue: str) -> int:
    """How many messages ``queue`` holds; :class:`CommandError` if it does not exist."""
    try:
        ok = await within(RPC_TIMEOUT, channel.queue_declare(queue, passive=True))
    except ChannelNotFoundEntity:
        raise CommandError(
            f"queue {queue} does not exist: check NAME, or declare the subscriber's queues "
            "with `mintsoft-bridge topology --config FILE`"
        ) from None
    return int(ok.message_count or 0)


def _no_answer() -> CommandError:
    return CommandError(
        f"the broker stopped answering (no reply within {RPC_TIMEOUT:.0f} s): check its "
        "health (rabbitmqctl status) and its memory and disk alarms, then run it again"
    )


def got_empty(got: DeliveredMessage) -> bool:
    """Whether a ``basic.get`` found the queue empty."""
    return isinstance(got.delivery, Basic.GetEmpty)


def describe(got: DeliveredMessage) -> str:
    """``message_id, event, order id, attempts, error``, tab-separated, one line."""
    properties = got.header.properties
    headers = plain_headers(properties.headers)
    fields: list[Any] = [
        properties.message_id or "-",
        event_of(properties, headers, got.routing_key or ""),
        headers.get(HEADER_ORDER_ID) or "-",
        delivery_number(headers),
        mask(" ".join(str(headers.get(ERROR_HEADER) or "-").split())),
    ]
    return "\t".join(str(field) for field in fields)


@dataclass(frozen=True)
class DeadLetters:
    """What ``list_dead_letters`` saw: the queue, its depth, and the messages it read,
    oldest first."""

    queue: str
    depth: int
    messages: list[DeliveredMessage]


async def list_dead_letters(broker: Brokers, name: str, limit: int | None) -> DeadLetters:
    """Read up to ``limit`` dead letters of subscriber ``name``; the queue is left as it was
    (nothing is acked: closing the channel puts every one back)."""
    check_name(name)
    queue = dlq_name(name)
    lease = await borrow(broker)
    messages: list[DeliveredMessage] = []
    try:
        channel = await within(RPC_TIMEOUT, lease.channel(publisher_confirms=False))
        depth = await queue_depth(channel, queue)
        wanted = depth if limit is None else min(depth, limit)
        while len(messages) < wanted:
            got = await within(RPC_TIMEOUT, channel.basic_get(queue, no_ack=False))
            if got_empty(got):
                break
            messages.append(got)
        await put_back(lease, channel, queue, depth)
    except TimeoutError:
        raise _no_answer() from None
    finally:
        await lease.release()
    messages.sort(key=oldest_first)
    return DeadLetters(queue, depth, messages)


async def put_back(lease: Borrowed, channel: AbstractChannel, queue: str, ready: int) -> None:
    """Close ``channel`` (every message it took unacked goes back to ``queue``) and wait, up
    to :data:`PUT_BACK_WAIT`, until ``queue`` holds ``ready`` messages again (a worker may
    add dead letters meanwhile; only an operator takes them)."""
    await close_quietly(channel)
    probe = await within(RPC_TIMEOUT, lease.channel(publisher_confirms=False))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PUT_BACK_WAIT
    while loop.time() < deadline:
        if await queue_depth(probe, queue) >= ready:
            return
        await asyncio.sleep(0.01)


def oldest_first(got: DeliveredMessage) -> tuple[str, str]:
    """Sort key of a dead letter: when it failed (``x-failed-at``, RFC 3339 UTC with fixed
    width, so text order is time order), then its message id (ties and a missing header
    still order the same way every time)."""
    properties = got.header.properties
    failed_at = plain_headers(properties.headers).get(FAILED_AT_HEADER)
    return (str(failed_at or ""), properties.message_id or "")


async def replay_dead_letters(
    broker: Brokers, name: str, limit: int | None, acting: Acting | None = None
) -> tuple[int, str]:
    """Move up to ``limit`` dead letters back to ``name`` with ``x-attempt`` reset; returns
    how many moved and from which queue. A failure part-way raises :class:`CommandError`
    saying how many had moved (each of those was confirmed before its ack). Given
    ``acting``, each message moved leaves a ``replayed`` delivery record, and the replay one
    audit record (how many moved; why it stopped, if it did)."""
    check_name(name)
    queue = dlq_name(name)
    async with acting_on(broker, name, Action.DLQ_REPLAY, acting, "moved back") as change:
        exchange = await partitions_exchange(change.lease.connection, name, RPC_TIMEOUT)
        channel = await within(
            RPC_TIMEOUT, change.lease.channel(publisher_confirms=True, on_return_raises=True)
        )
        if exchange is None:
            await queue_depth(channel, name)
        # Only what is there now: a message that fails again must not be replayed twice.
        depth = await queue_depth(channel, queue)
        change.begun = True
        wanted = depth if limit is None else min(depth, limit)
        await _Replay(channel, name, wanted, change, exchange, acting).run(queue)
        await put_back(change.lease, channel, queue, depth - change.done)
    return change.done, queue


@dataclass(eq=False)
class Change:
    """One operator change on a subscriber's dead letters while it runs (see
    :func:`acting_on`): its borrowed connection, whether it began (reached the DLQ), and how
    many messages it has done."""

    lease: Borrowed
    begun: bool = False
    done: int = 0

    def partial(self, error: CommandError, did: str) -> CommandError:
        """``error``, saying how many messages the change ``did`` before it, if any."""
        if self.done == 0:
            return error
        return CommandError(f"{error} ({self.done} {did} before this)")


@asynccontextmanager
async def acting_on(
    broker: Brokers, name: str, action: Action, acting: Acting | None, did: str
) -> AsyncIterator[Change]:
    """Borrow a connection for one change on ``name``'s dead letters, released at the end
    (whatever it took unacked goes back to the DLQ). A :class:`CommandError` in it, or a
    broker that stopped answering (:class:`TimeoutError`), leaves as a
    :class:`CommandError` saying how many messages it ``did`` before it (with ``did`` =
    ``"moved back"``: ``"... (3 moved back before this)"``). Given ``acting``, a change that
    began leaves its one audit record once it is over: how many it did, and why it stopped
    if it did (never failing it)."""
    change = Change(await borrow(broker))
    error: CommandError | None = None
    try:
        yield change
    except TimeoutError:
        error = change.partial(_no_answer(), did)
        raise error from None
    except CommandError as exc:
        error = change.partial(exc, did)
        raise error from None
    finally:
        if acting is not None and change.begun:
            stopped = None if error is None else str(error)
            record = acting.audit(action, name, change.done, stopped)
            await audit_on(change.lease.connection, acting.exchange, record)
        await change.lease.release()


@dataclass(eq=False)
class _Replay:
    """Consumes the DLQ with ``REPLAY_WINDOW`` messages in flight, each acked only after its
    copy in ``<name>`` is confirmed; stops after ``wanted`` or when the DLQ runs dry.
    Copies with one message id (identical webhooks) are in flight together, under the one
    twin policy of :mod:`bridge.amqp.publisher`."""

    channel: AbstractChannel
    name: str
    wanted: int
    change: Change
    """Counts each message moved (``done``)."""
    exchange: str | None = None
    acting: Acting | None = None
    taken: int = field(default=0, init=False)
    settled: int = field(default=0, init=False)
    error: CommandError | None = field(default=None, init=False)
    _progress: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def run(self, queue: str) -> None:
        if self.wanted == 0:
            return
        await within(
            RPC_TIMEOUT, self.channel.basic_qos(prefetch_count=min(REPLAY_WINDOW, self.wanted))
        )
        ok = await within(RPC_TIMEOUT, self.channel.basic_consume(queue, self._take))
        # Until enough are moved (or one failed), and every message taken is settled.
        while (self.change.done < self.wanted and self.error is None) or self.settled < self.taken:
            self._progress.clear()
            try:
                async with asyncio.timeout(REPLAY_IDLE):
                    await self._progress.wait()
            except TimeoutError:
                if self.settled == self.taken:
                    break  # nothing in flight and nothing arriving: the DLQ ran dry
        assert ok.consumer_tag is not None
        await within(RPC_TIMEOUT, self.channel.basic_cancel(ok.consumer_tag))
        if self.error is not None:
            raise self.error

    async def _take(self, got: DeliveredMessage) -> None:
        if self.taken >= self.wanted or self.error is not None:
            return  # not ours to move: unacked, it goes back to the DLQ on close
        self.taken += 1
        try:
            await move_back(self.channel, got, self.name, self.exchange, self.acting)
            self.change.done += 1
        except CommandError as exc:
            self.error = self.error or exc
        finally:
            self.settled += 1
            self._progress.set()


async def record_acted(
    channel: AbstractChannel, got: DeliveredMessage, name: str, outcome: Recorded, acting: Acting
) -> None:
    """Write the delivery record of an operator's action on dead letter ``got`` of
    ``name``, before its ack (a refused one is counted, and the action goes on)."""
    properties = got.header.properties
    headers = plain_headers(properties.headers)
    order_number = headers.get(HEADER_ORDER_NUMBER)
    order_id = headers.get(HEADER_ORDER_ID)
    record = acting.record(
        outcome,
        message_id=properties.message_id or "-",
        subscriber=name,
        event=event_of(properties, headers, got.routing_key or ""),
        order_id=None if order_id is None else str(order_id),
        order_number=None if order_number is None else str(order_number),
        attempt=delivery_number(headers),
    )
    await write_record(channel, acting.exchange, record)


async def move_back(
    channel: AbstractChannel,
    got: DeliveredMessage,
    name: str,
    exchange: str | None = None,
    acting: Acting | None = None,
) -> None:
    properties = got.header.properties
    headers = dict(properties.headers or {})
    for header in (ATTEMPT_HEADER, ERROR_HEADER, FAILED_AT_HEADER):
        headers.pop(header, None)
    to_exchange, routing_key = route(name, exchange)
    outcome = await confirms(channel).publish(
        got.body,
        exchange=to_exchange,
        routing_key=routing_key,
        properties=copy_properties(properties, headers),
        timeout=PUBLISH_TIMEOUT,
    )
    if outcome is Outcome.RETURNED:
        raise CommandError(f"queue {name} routed nothing (was it deleted?): run topology")
    if outcome is Outcome.NACKED:
        raise CommandError(
            f"the broker refused a message for {name} (is the queue full?): the rest stays "
            "in the DLQ, nothing was lost"
        )
    if outcome is not Outcome.CONFIRMED:
        raise CommandError(
            f"the broker did not confirm a message for {name} ({outcome}): "
            "the rest stays in the DLQ, nothing was lost; run the replay again"
        )
    if acting is not None:
        await record_acted(channel, got, name, Recorded.REPLAYED, acting)
    assert got.delivery_tag is not None
    await channel.basic_ack(got.delivery_tag)
