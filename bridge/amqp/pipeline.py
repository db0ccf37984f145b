"""Consumer acks on aiormq channels: hand-built frames, one socket write per loop turn.

aiormq writes (and waits for) each ``basic.ack`` on its own. :class:`AckWriter` builds the
frames by hand and hands every ack of one event-loop turn to aiormq's writer as a single
socket write (on a consumer's channel, every ack of up to
:data:`~bridge.amqp.aiormq_internals.HOLD_SECONDS`, until 3/4 of its prefetch is in hand:
:func:`set_prefetch`), through the checked adapter :mod:`bridge.amqp.aiormq_internals`, after
whatever else the turn wrote on the channel (a delivery record goes before its message's
ack). Where a turn's acks, with those before, settle every delivery tag up to some tag,
they go as one ``basic.ack`` with ``multiple`` (:class:`AckRun`): one frame for the broker
to read and one settle for the queue, instead of one per message; an ack beyond such a run
goes on its own, and a requeue always does, before the run's ack (which would otherwise
take it too). A multiple ack never covers a delivery not settled here.

When that adapter's check fails on a channel (another aiormq), or
``BRIDGE_PUBLISH_PATH=public``, the acks go one by one through aiormq's public
``basic_ack`` / ``basic_nack`` instead; one log line says which path runs. (Publishes:
:mod:`bridge.amqp.publisher`.)
"""

from __future__ import annotations

import asyncio
import logging
import struct

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import ChannelInvalidStateError

from bridge.amqp import aiormq_internals as internals

log = logging.getLogger("bridge.amqp.pipeline")


_ACK = struct.Struct(">BHIHHQBB")  # frame head, Basic class and method, delivery tag, bits


def ack_frame(
    channel: int, delivery_tag: int, ack: bool, requeue: bool = True, multiple: bool = False
) -> bytes:
    """The frame of ``basic.ack`` (or ``basic.nack`` with ``requeue``) for one message, or
    with ``multiple`` for every unsettled one up to ``delivery_tag``."""
    bits = 1 if multiple else 0
    if ack:
        return _ACK.pack(1, channel, 13, 60, 80, delivery_tag, bits, 0xCE)
    return _ACK.pack(1, channel, 13, 60, 120, delivery_tag, bits | (2 if requeue else 0), 0xCE)


MAX_SETTLED_AHEAD = 4096
"""Settled tags an :class:`AckRun` remembers beyond a delivery still unsettled; past that
(a message held very long, or a tag this channel never handed us) it stops looking for
runs and acks one by one."""


class AckRun:
    """The acks and requeues of one channel's loop turn, as frames (see the module doc).

    Delivery tags count a channel's deliveries from 1; every tag up to :attr:`upto` is
    settled (acked or requeued) here, and :attr:`ahead` holds those settled beyond it.
    A turn's acks within that range go as one multiple ack naming the highest of them,
    after the turn's requeues: below it there is nothing unsettled it could take."""

    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.upto = 0
        self.ahead: set[int] = set()
        self.turn: list[tuple[int, bool | None]] = []
        self.runs = True

    def add(self, delivery_tag: int, ack: bool | None) -> None:
        """Ack (True) or requeue (False) ``delivery_tag``; ``None``: a delivery that needs
        neither (a ``no_ack`` consumer's on this channel), only counted as settled."""
        self.turn.append((delivery_tag, ack))

    def waiting(self) -> int:
        """The acks and requeues given since the last :meth:`frames`."""
        return len(self.turn)

    def frames(self) -> bytes:
        """The frames of the acks and requeues given since the last call."""
        turn, self.turn = self.turn, []
        if not turn:
            return b""
        channel = self.channel
        if not self.runs:
            return b"".join(ack_frame(channel, tag, ack) for tag, ack in turn if ack is not None)
        ahead = self.ahead
        for tag, _ack in turn:
            ahead.add(tag)
        upto = self.upto
        while upto + 1 in ahead:
            upto += 1
            ahead.remove(upto)
        self.upto = upto
        if len(ahead) > MAX_SETTLED_AHEAD:
            self.runs = False
            ahead.clear()
        requeues = [ack_frame(channel, tag, False) for tag, ack in turn if ack is False]
        alone = [ack_frame(channel, tag, True) for tag, ack in turn if ack and tag > upto]
        # The broker knows only a tag still unsettled: the run's ack names the highest one
        # this turn acked (the tags below it are acked with it or were settled before).
        last = max((tag for tag, ack in turn if ack and tag <= upto), default=0)
        if last:
            alone.append(ack_frame(channel, last, True, multiple=True))
        return b"".join(requeues + alone)


async def set_prefetch(channel: AbstractChannel, count: int) -> None:
    """Set ``channel``'s prefetch to ``count`` and let its acks wait (at most
    :data:`~bridge.amqp.aiormq_internals.HOLD_SECONDS`) until three quarters of that is in
    hand: the broker goes on delivering the last quarter meanwhile, and one multiple ack
    (and one message of delivery records) covers the run."""
    await channel.basic_qos(prefetch_count=count)
    if internals.public_path_reason() is None and internals.check_acks(channel) is None:
        internals.frame_batch(channel).hold_run = max(1, count * 3 // 4)


def no_ack_delivery(delivered: DeliveredMessage) -> None:
    """Tell the channel's acks that this delivery (of a ``no_ack`` consumer sharing the
    channel) is settled already: it must not hold back the channel's multiple acks."""
    run = internals.kept(delivered.channel, "acks")
    if run is not None and run[0] is not None and delivered.delivery_tag is not None:
        run[0].add(delivered.delivery_tag, None)


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
        (run,) = internals.per_channel(channel, "acks", lambda: (self._run_for(channel),))
        if run is not None:
            run.add(delivery_tag, ack)
            internals.frame_batch(channel).due()
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
        (run,) = internals.per_channel(channel, "acks", lambda: (self._run_for(channel),))
        try:
            async with asyncio.timeout(timeout):
                if run is not None:
                    await internals.frame_batch(channel).written()
                elif self._tasks:
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            return False
        return True

    def _run_for(self, channel: AbstractChannel) -> AckRun | None:
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
        if reason is not None:
            return None
        batch = internals.frame_batch(channel)
        run = AckRun(batch.number)
        batch.last = run.frames
        batch.waiting = run.waiting
        return run

    def _settled(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "ack/nack lost with its channel (%s); the broker will redeliver",
                type(task.exception()).__name__,
            )
