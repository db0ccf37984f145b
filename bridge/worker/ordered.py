"""An ordered subscriber (``ordered = true``): each order's events are handled one at a time,
in the order RabbitMQ received them, across any number of worker processes.

How it holds:

- The consistent-hash exchange ``<name>.partitions`` sends every message of one order (same
  ``x-order-id``; messages without one all go to one fixed partition) to the same quorum
  queue ``<name>.partition.<i>``, which has a single active consumer. Every worker subscribes
  to every partition; the others stand by and take over when the active one goes away.
- Each partition has its own channel with prefetch 1: its next message is delivered only
  after the previous one was acked, so a partition is never handled in parallel. On a crash
  or a lost connection the broker gives the unacked message back first in line, before the
  next consumer becomes active (the message may be handled twice; never out of order).
- A failure never lets a later event overtake: tries in process, then waits out
  ``retry_delays`` holding the message, then the DLQ, and the partition moves on.
- It never cancels a consumer that holds a message (RabbitMQ would make the next consumer
  active while this one still holds it): a partition is handed over by closing its channel,
  which returns what it holds first. While the forward target is down (breaker open) the
  message is held; past :data:`MAX_PAUSED_HOLD` the connection is dropped, which gives every
  held message back in order, and consuming resumes when the target answers.
- Partitions are shared: each worker counts the workers (consumers of ``<name>.workers``) and
  one that is active on more than its share hands partitions over, one per
  :data:`REBALANCE_INTERVAL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage

from bridge.amqp.connection import close_quietly
from bridge.amqp.topology import partition_queue_name, roster_name
from bridge.core.settings import Settings
from bridge.errors import PermanentError
from bridge.worker.message import Message
from bridge.worker.pacing import LANE
from bridge.worker.retry import Ladder
from bridge.worker.subscribers import Handler, Subscriber
from bridge.worker.subscription import SHUTDOWN_GRACE, Subscription

log = logging.getLogger("bridge.worker.ordered")

REBALANCE_INTERVAL = 1.0
MAX_PAUSED_HOLD = 600.0
"""Seconds a message is held while the target is down before it is given back."""


class _GaveUp(Exception):
    """The message was not handled; it stays unacked and goes back first in line."""


async def _ignore(_message: DeliveredMessage) -> None:
    """``<name>.workers`` never holds a message: consuming it only makes this worker count."""


class OrderedSubscription(Subscription):
    """A :class:`Subscription` over partition queues, one message at a time per partition."""

    def __init__(self, settings: Settings, sub: Subscriber, handler: Handler) -> None:
        super().__init__(settings, sub, handler)
        # No retry queues: after the in-process tries and the waits in place, the DLQ.
        self.ladder = Ladder(sub.name, (), sub.in_process_tries)
        self._waits = sub.retry_delays_ms
        self._partitions: dict[int, AbstractChannel] = {}
        self._active: set[int] = set()
        self._busy: dict[int, asyncio.Task[Any]] = {}
        self._releasing: set[int] = set()
        self._stop_event = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._rebalancer: asyncio.Task[None] | None = None
        if self.breaker is not None:
            self.breaker.on_change(self._on_breaker)

    def _on_breaker(self, is_open: bool) -> None:
        if is_open:
            self._resumed.clear()
        else:
            self._resumed.set()

    @property
    def active_partitions(self) -> set[int]:
        """Partitions this worker handled a message of since it last subscribed to them."""
        return set(self._active)

    # --- subscribing ------------------------------------------------------------------

    def _order(self) -> list[int]:
        # Workers starting together begin at different partitions, so each gets some first.
        count = self.sub.partitions
        start = random.randrange(count)
        return [(start + i) % count for i in range(count)]

    async def _on_channel(self, channel: AbstractChannel) -> None:
        await self._declare(channel)
        await self.pauses.attach(channel)
        async with self._lock:
            self._channel = channel
            self._partitions = {}
            self._active.clear()
            self._releasing.clear()
            await channel.basic_consume(roster_name(self.sub.name), _ignore, no_ack=True)
            if not self._stopping and not self._paused():
                for index in self._order():
                    await self._subscribe(channel, index)
        if self._rebalancer is None:
            self._rebalancer = asyncio.create_task(self._rebalance(), name="partition-rebalance")
            self._background.add(self._rebalancer)
        self.ready.set()
        state = "consuming" if self._partitions else "not consuming (paused)"
        log.info(
            "%s %d partitions of %s", state, self.sub.partitions, self.sub.name, extra=self._log
        )

    async def _subscribe(self, main: AbstractChannel, index: int) -> None:
        channel = await main.connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.basic_qos(prefetch_count=1)
        # Known before consume-ok: the first delivery can arrive ahead of it.
        self._partitions[index] = channel
        channel.closing.add_done_callback(functools.partial(self._closed, index, channel))
        try:
            await channel.basic_consume(
                partition_queue_name(self.sub.name, index),
                functools.partial(self._deliver_partition, index),
            )
        except BaseException:
            if self._partitions.get(index) is channel:
                del self._partitions[index]
            raise

    def _closed(self, index: int, channel: AbstractChannel, _future: Any) -> None:
        if self._stopping or self._partitions.get(index) is not channel:
            return  # closed by us, or replaced
        main = self._channel
        if main is not None and not main.is_closed:
            # The broker closed it (e.g. consumer_timeout): start over on a new connection.
            log.warning("partition %d channel closed by the broker; reconnecting", index)
            self.link.renew()

    async def _sync_consumer(self) -> None:
        """Subscribe partitions left out while paused. Never cancels (see module doc)."""
        async with self._lock:
            channel = self._channel
            if channel is None or channel.is_closed or self._stopping or self._paused():
                return
            try:
                for index in self._order():
                    if index not in self._partitions:
                        await self._subscribe(channel, index)
            except Exception as exc:  # the link reconnects and calls _on_channel again
                log.warning("subscribing partitions failed (%s)", exc, extra=self._log)

    # --- one message ------------------------------------------------------------------

    async def _deliver_partition(self, index: int, delivered: DeliveredMessage) -> None:
        if (
            self._stopping
            or index in self._releasing
            or self._partitions.get(index) is not delivered.channel
        ):
            return  # left unacked: closing the channel gives it back first in line
        self._active.add(index)
        LANE.set(index)  # this delivery's task paces in its partition's bucket
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        self._busy[index] = task
        try:
            if await self._hold_while_paused():
                await self._process(delivered)
        finally:
            self._in_flight.discard(task)
            if self._busy.get(index) is task:
                del self._busy[index]

    async def _hold_while_paused(self) -> bool:
        """Wait while the target is down; False if the message is to be given back."""
        if not self._paused():
            return not self._stopping
        try:
            async with asyncio.timeout(MAX_PAUSED_HOLD):
                while self._paused() and not self._stopping:
                    await _first_of(self._resumed, self._stop_event)
        except TimeoutError:
            log.warning(
                "target down for %gs: giving the held messages back to the queues",
                MAX_PAUSED_HOLD,
                extra=self._log,
            )
            self.link.renew()
            return False
        return not self._stopping

    async def _call(self, message: Message) -> None:
        first = message.delivery
        while True:
            try:
                await super()._call(message)
                return
            except Exception as exc:
                if isinstance(exc, PermanentError) or self._stopping:
                    raise
                if self._paused():
                    # The target's outage is not the message's fault: same round again.
                    if not await self._hold_while_paused():
                        raise _GaveUp() from None
                    continue
                done = message.delivery - first
                if done >= len(self._waits):
                    raise
                wait = self._waits[done] / 1000
                log.warning(
                    "retrying in place in %gs (later events of this partition wait)",
                    wait,
                    extra=message.log_fields(),
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stop_event.wait()
                if self._stopping:
                    raise _GaveUp() from None
                message.delivery += 1

    async def _failed(self, delivered: DeliveredMessage, message: Message, exc: Exception) -> None:
        if isinstance(exc, _GaveUp) or (self._stopping and not isinstance(exc, PermanentError)):
            # Never requeued by hand while we still consume: closing the channel returns it
            # before any other consumer of the partition becomes active.
            log.info("left unacked for the next consumer", extra=message.log_fields())
            return
        await self._next_step(delivered, message, exc)

    # --- sharing the partitions -------------------------------------------------------

    async def _rebalance(self) -> None:
        while not self._stopping:
            await asyncio.sleep(REBALANCE_INTERVAL)
            channel = self._channel
            if channel is None or channel.is_closed or len(self._active) <= 1:
                continue
            try:
                ok = await channel.queue_declare(roster_name(self.sub.name), passive=True)
            except Exception:
                continue  # the link reconnects
            workers = max(int(ok.consumer_count or 1), 1)
            share = -(-self.sub.partitions // workers)
            if len(self._active) > share and not self._stopping and not self._paused():
                await self._hand_over(random.choice(sorted(self._active)), workers)

    async def _hand_over(self, index: int, workers: int) -> None:
        """Let another worker take partition ``index``: finish its message, close its
        channel (the broker gives back what it still holds, then activates the next
        consumer), and subscribe again, at the back of the line."""
        async with self._lock:
            channel = self._partitions.get(index)
            if channel is None:
                return
            self._releasing.add(index)
            self._active.discard(index)
            busy = self._busy.get(index)
        try:
            if busy is not None:
                await asyncio.wait({busy})
            await asyncio.sleep(0)  # the ack leaves before the channel's close
            async with self._lock:
                self._partitions.pop(index, None)
                await close_quietly(channel)
                main = self._channel
                if main is not None and not main.is_closed and not self._stopping:
                    await self._subscribe(main, index)
        except Exception as exc:
            log.warning("handing partition %d over failed (%s)", index, exc, extra=self._log)
        finally:
            self._releasing.discard(index)
        log.info(
            "handed partition %d over (%d workers share %d partitions)",
            index,
            workers,
            self.sub.partitions,
            extra=self._log,
        )

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        self._stopping = True
        self._stop_event.set()
        await super().stop(grace)


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
