"""Pipelined writes on aiormq channels: hand-built frames, one socket write per loop turn.

Publishes (:class:`PublishWriter`) and consumer acks (:class:`AckWriter`).

aiormq's ``basic_publish`` marshals every frame through pamqp, takes a lock, and queues one
write per message. The fast path here builds the frames by hand
(:mod:`bridge.amqp.frames`) and hands every publish of one event-loop turn to aiormq's
writer as a single socket write, doing aiormq's confirm bookkeeping through the checked
adapter :mod:`bridge.amqp.aiormq_internals`. When that adapter's check fails on a channel
(another aiormq), or ``BRIDGE_PUBLISH_PATH=public``, the same publishes and acks go through
aiormq's public ``basic_publish`` / ``basic_ack`` / ``basic_nack`` instead; one log line
says which path runs.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import weakref

from aiormq.abc import AbstractChannel
from aiormq.exceptions import ChannelInvalidStateError

from bridge.amqp import aiormq_internals as internals
from bridge.amqp.frames import PublishFrames
from bridge.core.contract import Envelope

log = logging.getLogger("bridge.amqp.pipeline")

FAST, PUBLIC = "fast", "public"


class PublishWriter:
    """Sends envelopes to one exchange on whatever channel it is given.

    :meth:`path` says, once per channel, whether :meth:`send` (fast) may be used on it, or
    the caller must use aiormq's public ``basic_publish``.
    """

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self._channel: AbstractChannel | None = None
        self._path = PUBLIC
        self._fast: internals.FastChannel | None = None
        self._frames: PublishFrames | None = None
        self._said: str | None = None

    def path(self, channel: AbstractChannel) -> str:
        """``"fast"`` or ``"public"`` for ``channel`` (checked on its first publish)."""
        if channel is self._channel:
            return self._path
        if self._fast is not None:
            # A new channel (after a reconnect): what was buffered for the old one is moot,
            # its confirmations are rejected with the old channel.
            self._fast.discard()
            self._fast = self._frames = None
        self._channel = channel
        forced = internals.public_path_reason()
        reason = forced or internals.check(channel)
        if reason is None:
            self._fast = internals.FastChannel(channel)
            self._frames = PublishFrames(
                self._fast.number, self.exchange, self._fast.max_body_frame
            )
            self._path = FAST
            said = f"publishing on the fast path (aiormq {internals.AIORMQ_VERSION} checked)"
        else:
            self._path = PUBLIC
            said = f"publishing through aiormq's public API ({reason})"
        if said != self._said:  # once, and again only if it changes
            self._said = said
            log.log(logging.WARNING if reason and not forced else logging.INFO, said)
        return self._path

    def send(self, channel: AbstractChannel, envelope: Envelope) -> internals.Pending:
        """Queue ``envelope`` on ``channel`` (whose :meth:`path` is fast); the pending's
        future settles with the broker's confirm. Call :meth:`finish` when done with it.

        Raises :class:`~aiormq.exceptions.ChannelInvalidStateError` if the channel is closed.
        """
        fast, frames = self._fast, self._frames
        if fast is None or frames is None or fast.channel is not channel:
            raise RuntimeError("send() on a channel whose path is not fast")
        if fast.closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        return fast.publish(frames.encode(envelope), envelope.message_id)

    def finish(self, channel: AbstractChannel, pending: internals.Pending) -> None:
        if self._fast is not None and self._fast.channel is channel:
            self._fast.finish(pending)


_ACK = struct.Struct(">BHIHHQBB")  # frame head, Basic class and method, delivery tag, bits


def ack_frame(channel: int, delivery_tag: int, ack: bool, requeue: bool = True) -> bytes:
    """The frame of ``basic.ack`` (or ``basic.nack`` with ``requeue``) for one message."""
    if ack:
        return _ACK.pack(1, channel, 13, 60, 80, delivery_tag, 0, 0xCE)
    return _ACK.pack(1, channel, 13, 60, 120, delivery_tag, 2 if requeue else 0, 0xCE)


class AckWriter:
    """Acks and nacks of consumer channels, several per socket write.

    A consumer with a prefetch of N settles up to N messages per loop turn; aiormq writes
    (and waits for) each ack on its own. Here they are buffered per channel and written
    together (or, on the public path, handed to ``basic_ack`` / ``basic_nack`` without
    waiting). An ack still unsent when its channel dies is lost like any unsent ack: the
    broker redelivers the message.
    """

    def __init__(self) -> None:
        self._batches: weakref.WeakKeyDictionary[AbstractChannel, internals.FrameBatch | None]
        self._batches = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Future[None]] = set()
        self._said: str | None = None

    def settle(self, channel: AbstractChannel, delivery_tag: int, ack: bool) -> None:
        """Ack, or nack with requeue; raises ``ChannelInvalidStateError`` if closed."""
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        try:
            batch = self._batches[channel]
        except KeyError:
            batch = self._batches[channel] = self._batch_for(channel)
        if batch is not None:
            batch.add(ack_frame(batch.number, delivery_tag, ack))
            return
        if ack:
            settled = channel.basic_ack(delivery_tag, wait=False)
        else:
            settled = channel.basic_nack(delivery_tag, requeue=True, wait=False)
        task = asyncio.ensure_future(settled)
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _batch_for(self, channel: AbstractChannel) -> internals.FrameBatch | None:
        forced = internals.public_path_reason()
        reason = forced or internals.check_acks(channel)
        said = (
            "acking on the fast path"
            if reason is None
            else f"acking through aiormq's public API ({reason})"
        )
        if said != self._said:
            self._said = said
            log.log(logging.WARNING if reason and not forced else logging.INFO, said)
        return internals.FrameBatch(channel) if reason is None else None

    def _settled(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "ack/nack lost with its channel (%s); the broker will redeliver",
                type(task.exception()).__name__,
            )
