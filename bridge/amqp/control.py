"""A subscriber's operator state (paused or consuming), kept in the broker: the durable
queue ``<name>.control`` (see :func:`bridge.amqp.topology.control_name`) holds the latest
state as one persistent message; no state message means consuming.

Written by :func:`write_state` (the console's pause and resume) through the one confirmed
publish: the state is set once the broker confirmed it. Read by :func:`read_state` (every
worker of the subscriber, at start and every few seconds; the console's subscriber page)
with ``basic.get`` and a reject back to the queue, so reading never consumes the state.

Why it holds with many readers and writers: the queue is classic with ``x-max-length`` 1
and ``x-overflow`` ``drop-head``, so a new state drops the old one. A reader holding the
old state while a new one is published puts it back ahead of the new one; RabbitMQ then
has two ready messages for a moment. A reader that gets a state with more messages behind
it (``message_count`` of ``get-ok``) knows it is stale: it acks it away and reads the next.
So the newest state always stays, and every reader ends up seeing it.

A reader holds the state unacked from its get to its reject: in that moment the queue looks
empty to every other reader. Empty is therefore read again a few times, over
:data:`EMPTY_RECHECKS` (a hold lasts one round trip of the holder's event loop): only a queue
still empty then means "never written", i.e. consuming. Taking the first empty answer made a
paused worker whose read met another worker's resume until its next read, and a worker
restarted while paused start consuming.

Fails with the channel's errors (``ChannelNotFoundEntity`` when the queue is not declared
yet, ``TimeoutError`` after :data:`RPC_TIMEOUT` per get): callers decide (a worker keeps its
last known state). A read cancelled at any point raises ``CancelledError``, never returns.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

from aiormq.abc import AbstractChannel
from pamqp.commands import Basic

from bridge.amqp.publisher import Outcome, confirms
from bridge.amqp.topology import control_name
from bridge.core.records import now_rfc3339
from bridge.core.tasks import within

RPC_TIMEOUT = 5.0
MAX_STALE_READS = 8
"""A bound on stale states acked away in one read (there is at most one per racing writer)."""
EMPTY_RECHECKS = (0.02, 0.04, 0.08, 0.16)
"""Seconds before each new get after an empty one: 0.3 s in all, far more than another
reader holds the state (one event loop turn of its worker, on a loaded machine too). Only a
never-paused subscriber pays it, once per read; a state that is there is found at once."""


@dataclass(frozen=True)
class ControlState:
    """``paused`` by ``operator`` (``None``: not known) at ``at`` (RFC 3339, UTC)."""

    paused: bool
    operator: str | None = None
    at: str | None = None

    def encode(self) -> bytes:
        data = {"paused": self.paused, "operator": self.operator, "at": self.at}
        return json.dumps(data).encode()

    @classmethod
    def decode(cls, body: bytes) -> ControlState:
        """A body that is not a state we wrote reads as consuming (never a stuck pause)."""
        try:
            data = json.loads(body)
        except ValueError:
            return CONSUMING
        if not isinstance(data, dict):
            return CONSUMING
        operator, at = data.get("operator"), data.get("at")
        return cls(
            paused=data.get("paused") is True,
            operator=operator if isinstance(operator, str) else None,
            at=at if isinstance(at, str) else None,
        )


CONSUMING = ControlState(paused=False)


async def read_state(
    channel: AbstractChannel, subscriber: str, rechecks: Sequence[float] = EMPTY_RECHECKS
) -> ControlState:
    """The subscriber's current state, leaving it in its queue. An empty queue is read
    again after each of ``rechecks`` seconds (what a worker acts on); a reader that only
    shows the state and reads it again soon (the console, per subscriber per page) passes
    none, rather than 0.3 s a never-paused subscriber."""
    queue = control_name(subscriber)
    pauses = iter(rechecks)
    stale = 0
    while stale < MAX_STALE_READS:
        # Not aiormq's ``timeout=`` (see within): a worker's pause gate, cancelled during a
        # read that way, polled on and never stopped.
        got = await within(RPC_TIMEOUT, channel.basic_get(queue, no_ack=False))
        if not isinstance(got.delivery, Basic.GetOk):
            pause = next(pauses, None)
            if pause is None:
                return CONSUMING  # never written (or held by another reader all along)
            await asyncio.sleep(pause)  # another reader may hold it: it puts it back soon
            continue
        tag = got.delivery.delivery_tag
        assert tag is not None
        if got.delivery.message_count:  # a newer state waits behind this one
            await channel.basic_ack(tag)
            stale += 1
            continue
        state = ControlState.decode(got.body)
        await channel.basic_reject(tag, requeue=True)
        return state
    return CONSUMING


async def write_state(
    channel: AbstractChannel, subscriber: str, paused: bool, operator: str | None
) -> ControlState:
    """Set the subscriber's state (``channel`` in confirm mode); raises :class:`StateNotSet`
    unless the broker confirmed it."""
    state = ControlState(paused=paused, operator=operator, at=now_rfc3339())
    outcome = await confirms(channel).publish(
        state.encode(),
        routing_key=control_name(subscriber),
        properties=Basic.Properties(delivery_mode=2, content_type="application/json"),
        timeout=RPC_TIMEOUT,
    )
    if outcome is not Outcome.CONFIRMED:
        raise StateNotSet(
            f"the broker did not take the new state of {subscriber!r} ({outcome}): check that "
            f"its queue {control_name(subscriber)} exists (start its worker or run topology "
            "--config) and try again"
        )
    return state


class StateNotSet(Exception):
    """The broker did not confirm a new state."""
