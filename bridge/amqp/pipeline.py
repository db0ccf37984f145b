"""Consumer acks on aiormq channels: hand-built frames, one socket write per loop turn.

aiormq writes (and waits for) each ``basic.ack`` on its own. :class:`AckWriter` builds the
frames by hand and hands every ack of one event-loop turn to aiormq's writer as a single
socket write, through the checked adapter :mod:`bridge.amqp.aiormq_internals`. When that
adapter's check fails on a channel (another aiormq), or ``BRIDGE_PUBLISH_PATH=public``, the
acks go through aiormq's public ``basic_ack`` / ``basic_nack`` instead; one log line says
which path runs. (Publishes: :mod:`bridge.amqp.publisher`.)
"""

from __future__ import annotations

import asyncio
import logging
import struct

from aiormq.abc import AbstractChannel
from aiormq.exceptions import ChannelInvalidStateError

from bridge.amqp import aiormq_internals as internals

log = logging.getLogger("bridge.amqp.pipeline")


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
        self._tasks: set[asyncio.Future[None]] = set()
        self._said: str | None = None

    def settle(self, channel: AbstractChannel, delivery_tag: int, ack: bool) -> None:
        """Ack, or nack with requeue; raises ``ChannelInvalidStateError`` if closed."""
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        (batch,) = internals.per_channel(channel, "acks", lambda: (self._batch_for(channel),))
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

    async def written(self, channel: AbstractChannel, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until every ack and nack given for ``channel``
        was written to the socket (before the channel is closed); False if not in time."""
        (batch,) = internals.per_channel(channel, "acks", lambda: (self._batch_for(channel),))
        try:
            async with asyncio.timeout(timeout):
                if batch is not None:
                    await batch.written()
                elif self._tasks:
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            return False
        return True

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
        return internals.frame_batch(channel) if reason is None else None

    def _settled(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "ack/nack lost with its channel (%s); the broker will redeliver",
                type(task.exception()).__name__,
            )
