"""Pipelined writes on aiormq channels: hand-built frames, one socket write per loop turn.

Publishes (:class:`PublishWriter`) and consumer acks (:class:`AckWriter`).

aiormq's ``basic_publish`` marshals every frame through pamqp, takes a lock, and queues one
write per message. Here each publish takes the channel's next delivery tag and registers its
confirmation exactly as ``basic_publish`` does (so aiormq's reader settles it on
``basic.ack``/``basic.nack``/``basic.return``, and rejects it when the channel closes), and
its frames join a buffer that is handed to aiormq's writer once per event-loop turn: every
publish made in the same turn leaves in a single socket write.

Delivery tags count publishes in the order the broker receives them, so this writer must be
the only publisher on its channel (the receiver's channel is used for nothing else), and the
buffer keeps the order in which tags were taken.
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from typing import Any

from aiormq.abc import AbstractChannel, ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError

from bridge.amqp.frames import PublishFrames
from bridge.core.contract import Envelope


class _Batch:
    """Frames for one channel, handed to aiormq's writer as one buffer per loop turn."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._buffer: list[bytes] = []
        self._scheduled = False
        self._putting: asyncio.Task[None] | None = None

    def add(self, frames: bytes) -> None:
        self._buffer.append(frames)
        if not self._scheduled:
            self._scheduled = True
            self.channel.loop.call_soon(self._flush)

    def discard(self) -> None:
        """Forget what is buffered (the channel is gone)."""
        self._buffer = []
        if self._putting is not None:
            self._putting.cancel()
            self._putting = None

    def _flush(self) -> None:
        self._scheduled = False
        if not self._buffer or self._putting is not None:
            return
        frame = ChannelFrame(payload=b"".join(self._buffer), should_close=False)
        self._buffer = []
        queue: asyncio.Queue[ChannelFrame] = self.channel.write_queue
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            # aiormq's writer is behind (a blocked connection): wait for room, keeping order.
            self._putting = asyncio.get_running_loop().create_task(self._put(queue, frame))

    async def _put(self, queue: asyncio.Queue[ChannelFrame], frame: ChannelFrame) -> None:
        await queue.put(frame)
        self._putting = None
        if self._buffer and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)


class PublishWriter:
    """Sends envelopes to one exchange on whatever channel it is given, batching writes."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self._batch: _Batch | None = None
        self._frames: PublishFrames | None = None

    def send(self, channel: AbstractChannel, envelope: Envelope) -> tuple[asyncio.Future[Any], int]:
        """Queue ``envelope`` on ``channel``; the future settles with the broker's confirm.

        Raises :class:`~aiormq.exceptions.ChannelInvalidStateError` if the channel is closed.
        """
        ch: Any = channel  # aiormq.Channel: its confirm bookkeeping is not on the ABC
        if ch.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        batch, frames = self._batch, self._frames
        if batch is None or frames is None or batch.channel is not ch:
            # A new channel (after a reconnect): what was buffered for the old one is moot,
            # its confirmations are rejected with the old channel.
            if batch is not None:
                batch.discard()
            batch = self._batch = _Batch(ch)
            frames = self._frames = PublishFrames(ch.number, self.exchange, ch.max_content_size)
        payload = frames.encode(envelope)
        ch.delivery_tag += 1
        tag: int = ch.delivery_tag
        confirmation: asyncio.Future[Any] = ch.create_future()
        ch.confirmations[tag] = confirmation
        # aiormq finds the publish a basic.return belongs to by message id; Publisher never
        # has two publishes with one id in flight.
        ch.message_id_delivery_tag[envelope.message_id] = tag
        batch.add(payload)
        return confirmation, tag

    def forget(self, channel: AbstractChannel, message_id: str, tag: int) -> None:
        """Drop the message id -> tag entry once its publish is settled (aiormq does the
        same in ``basic_publish``)."""
        ids: dict[str, int] = channel.message_id_delivery_tag  # type: ignore[attr-defined]
        if ids.get(message_id) == tag:
            del ids[message_id]


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
    together. An ack still in the buffer when its channel dies is lost like any unsent ack:
    the broker redelivers the message.
    """

    def __init__(self) -> None:
        self._batches: weakref.WeakKeyDictionary[Any, _Batch] = weakref.WeakKeyDictionary()

    def settle(self, channel: AbstractChannel, delivery_tag: int, ack: bool) -> None:
        """Ack, or nack with requeue; raises ``ChannelInvalidStateError`` if closed."""
        ch: Any = channel
        if ch.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        batch = self._batches.get(ch)
        if batch is None:
            batch = self._batches[ch] = _Batch(ch)
        batch.add(ack_frame(ch.number, delivery_tag, ack))
