"""Pipelined publishing on an aiormq confirm channel: hand-built frames, one write per batch.

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
from typing import Any

from aiormq.abc import AbstractChannel, ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError

from bridge.envelope import Envelope
from bridge.frames import PublishFrames


class PublishWriter:
    """Sends envelopes to one exchange on whatever channel it is given, batching writes."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self._channel: Any = None
        self._frames: PublishFrames | None = None
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        self._putting: asyncio.Task[None] | None = None

    def send(self, channel: AbstractChannel, envelope: Envelope) -> tuple[asyncio.Future[Any], int]:
        """Queue ``envelope`` on ``channel``; the future settles with the broker's confirm.

        Raises :class:`~aiormq.exceptions.ChannelInvalidStateError` if the channel is closed.
        """
        ch: Any = channel  # aiormq.Channel: its confirm bookkeeping is not on the ABC
        if ch.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        if ch is not self._channel:
            self._switch(ch)
        frames = self._frames
        assert frames is not None
        payload = frames.encode(envelope)
        ch.delivery_tag += 1
        tag: int = ch.delivery_tag
        confirmation: asyncio.Future[Any] = ch.create_future()
        ch.confirmations[tag] = confirmation
        # aiormq finds the publish a basic.return belongs to by message id; Publisher never
        # has two publishes with one id in flight.
        ch.message_id_delivery_tag[envelope.message_id] = tag
        self._buffer.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            ch.loop.call_soon(self._flush)
        return confirmation, tag

    def forget(self, channel: AbstractChannel, message_id: str, tag: int) -> None:
        """Drop the message id -> tag entry once its publish is settled (aiormq does the
        same in ``basic_publish``)."""
        ids: dict[str, int] = channel.message_id_delivery_tag  # type: ignore[attr-defined]
        if ids.get(message_id) == tag:
            del ids[message_id]

    def _switch(self, channel: Any) -> None:
        # A new channel (after a reconnect): what was buffered for the old one is moot, its
        # confirmations are rejected with the old channel.
        self._channel = channel
        self._frames = PublishFrames(channel.number, self.exchange, channel.max_content_size)
        self._buffer = []
        if self._putting is not None:
            self._putting.cancel()
            self._putting = None

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._buffer or self._putting is not None:
            return
        frame = ChannelFrame(payload=b"".join(self._buffer), should_close=False)
        self._buffer = []
        queue: asyncio.Queue[ChannelFrame] = self._channel.write_queue
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            # aiormq's writer is behind (a blocked connection): wait for room, keeping order.
            self._putting = asyncio.get_running_loop().create_task(self._put(queue, frame))

    async def _put(self, queue: asyncio.Queue[ChannelFrame], frame: ChannelFrame) -> None:
        await queue.put(frame)
        self._putting = None
        if self._buffer and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
