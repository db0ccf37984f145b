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
- Paused by an operator (:mod:`bridge.worker.pause`): every partition is released as in a
  hand-over (its message in hand finished, its ack written, its channel closed) and left
  unsubscribed until resumed; a message delivered meanwhile is not started, and closing the
  channel gives it back first in line.
- Partitions are shared: each worker counts the workers (consumers of ``<name>.workers``) and
  one that is active on more than its share hands partitions over, one per
  :data:`REBALANCE_INTERVAL`, after the acks of its last message were written.

Built by composition: :class:`OrderedSubscription` is the coordinator (link, roster,
rebalance) with one :class:`_Partition` consumer per partition; every message goes through
the same :class:`~bridge.worker.handling.Handling` as a plain subscriber's, given a ladder
that waits in place and a hold while the target is down.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Coroutine
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage

from bridge.amqp.connection import close_quietly
from bridge.amqp.topology import partition_queue_name, roster_name
from bridge.core.settings import Settings
from bridge.core.tasks import cancel_and_wait
from bridge.worker.handling import SubscriptionKind
from bridge.worker.pacing import LANE
from bridge.worker.retry import Ladder
from bridge.worker.subscribers import Handler, Subscriber
from bridge.worker.subscription import (
    SHUTDOWN_GRACE,
    Consuming,
    declare_or_fail,
    on_roster,
)

log = logging.getLogger("bridge.worker.ordered")

REBALANCE_INTERVAL = 1.0
MAX_PAUSED_HOLD = 600.0
"""Seconds a message is held while the target is down before it is given back."""


async def _leave_unacked(_delivered: DeliveredMessage) -> None:
    """Never requeued by hand while we still consume: closing the channel returns it
    before any other consumer of the partition becomes active."""


class _Partition:
    """One consumer of ``<name>.partition.<index>``, on a channel of its own (prefetch 1)."""

    def __init__(self, index: int, channel: AbstractChannel) -> None:
        self.index = index
        self.channel = channel
        self.busy: asyncio.Task[Any] | None = None
        self.active = False
        """Handled a message since it subscribed."""
        self.releasing = False


class OrderedSubscription(Consuming):
    """The coordinator of an ordered subscriber, on the parts of :class:`Consuming`: the
    roster of workers, the partitions' consumers and their rebalancing."""

    def __init__(
        self, settings: Settings, sub: Subscriber, handler: Handler, *, records: bool = True
    ) -> None:
        # No retry queues: the delays are waited holding the message, then the DLQ.
        ladder = Ladder(sub.name, sub.retry_delays_ms, sub.in_process_tries, in_place=True)
        kind = SubscriptionKind(ladder, give_back=_leave_unacked, hold=self._hold_while_paused)
        super().__init__(settings, sub, handler, kind, records=records)
        self._partitions: dict[int, _Partition] = {}
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._rebalancer: asyncio.Task[None] | None = None
        if self.breaker is not None:
            self.breaker.on_change(self._on_breaker)
        self.gate.on_change(lambda _paused: self._background(self._follow_gate()))
        self._gate_lock = asyncio.Lock()

    @property
    def _stopping(self) -> bool:
        return self.handling.stopping

    def _paused(self) -> bool:
        return self.breaker is not None and self.breaker.is_open

    def _on_breaker(self, is_open: bool) -> None:
        if is_open:
            self._resumed.clear()
        else:
            self._resumed.set()
            if self._channel is not None:
                self._background(self._subscribe_missing())  # those left out while paused

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _consuming(self) -> bool:
        return not self._stopping and not self._paused() and not self.gate.paused

    async def _follow_gate(self) -> None:
        """Release every partition while paused by an operator, subscribe them on resume;
        one change at a time, each following the state as it is when it runs."""
        async with self._gate_lock:
            if not self.gate.paused:
                await self._subscribe_missing()
                return
            async with self._lock:
                indexes = list(self._partitions)
            await asyncio.gather(*(self._release(index) for index in indexes))

    @property
    def active_partitions(self) -> set[int]:
        """Partitions this worker handled a message of since it last subscribed to them."""
        return {index for index, p in self._partitions.items() if p.active}

    # --- subscribing ------------------------------------------------------------------

    def _order(self) -> list[int]:
        # Workers starting together begin at different partitions, so each gets some first.
        count = self.sub.partitions
        start = random.randrange(count)
        return [(start + i) % count for i in range(count)]

    async def _on_channel(self, channel: AbstractChannel) -> None:
        await declare_or_fail(channel, self.topology, self.sub, self.failed)
        await self.pauses.attach(channel)
        await self.gate.refresh(channel.connection)  # started while paused: stays paused
        async with self._lock:
            self._channel = channel
            self._partitions = {}
            await channel.basic_consume(roster_name(self.sub.name), on_roster, no_ack=True)
            if self._consuming():
                for index in self._order():
                    await self._subscribe(channel, index)
        if self._rebalancer is None:
            self._rebalancer = asyncio.create_task(self._rebalance(), name="partition-rebalance")
        self.ready.set()
        state = "consuming" if self._partitions else "not consuming (paused)"
        log.info(
            "%s %d partitions of %s", state, self.sub.partitions, self.sub.name, extra=self._log
        )

    async def _subscribe(self, main: AbstractChannel, index: int) -> None:
        channel = await main.connection.channel(publisher_confirms=True)
        await channel.basic_qos(prefetch_count=1)
        # Known before consume-ok: the first delivery can arrive ahead of it.
        partition = self._partitions[index] = _Partition(index, channel)
        channel.closing.add_done_callback(functools.partial(self._closed, partition))
        try:
            await channel.basic_consume(
                partition_queue_name(self.sub.name, index),
                functools.partial(self._deliver, partition),
            )
        except BaseException:
            if self._partitions.get(index) is partition:
                del self._partitions[index]
            raise

    def _closed(self, partition: _Partition, _future: Any) -> None:
        if self._stopping or self._partitions.get(partition.index) is not partition:
            return  # closed by us, or replaced
        main = self._channel
        if main is not None and not main.is_closed:
            # The broker closed it (e.g. consumer_timeout): start over on a new connection.
            log.warning("partition %d channel closed by the broker; reconnecting", partition.index)
            self.link.renew()

    async def _subscribe_missing(self) -> None:
        """Subscribe partitions left out while paused. Never cancels (see module doc)."""
        async with self._lock:
            channel = self._channel
            if channel is None or channel.is_closed or not self._consuming():
                return
            try:
                for index in self._order():
                    if index not in self._partitions:
                        await self._subscribe(channel, index)
            except Exception as exc:  # the link reconnects and calls _on_channel again
                log.warning("subscribing partitions failed (%s)", exc, extra=self._log)

    # --- one message ------------------------------------------------------------------

    async def _deliver(self, partition: _Partition, delivered: DeliveredMessage) -> None:
        if (
            self._stopping
            or self.gate.paused
            or partition.releasing
            or self._partitions.get(partition.index) is not partition
        ):
            return  # left unacked: closing the channel gives it back first in line
        partition.active = True
        LANE.set(partition.index)  # this delivery's task paces in its partition's bucket
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        partition.busy = task
        try:
            if await self._hold_while_paused():
                await self.handling.process(delivered, task)
        finally:
            self._in_flight.discard(task)
            if partition.busy is task:
                partition.busy = None

    async def _hold_while_paused(self) -> bool:
        """Wait while the target is down; False if the message is to be given back."""
        if not self._paused():
            return not self._stopping
        try:
            async with asyncio.timeout(MAX_PAUSED_HOLD):
                while self._paused() and not self._stopping:
                    await _first_of(self._resumed, self.handling.stopped)
        except TimeoutError:
            log.warning(
                "target down for %gs: giving the held messages back to the queues",
                MAX_PAUSED_HOLD,
                extra=self._log,
            )
            self.link.renew()
            return False
        return not self._stopping

    # --- sharing the partitions -------------------------------------------------------

    async def _rebalance(self) -> None:
        while not self._stopping:
            await asyncio.sleep(REBALANCE_INTERVAL)
            channel = self._channel
            active = self.active_partitions
            if channel is None or channel.is_closed or len(active) <= 1:
                continue
            try:
                ok = await channel.queue_declare(roster_name(self.sub.name), passive=True)
            except Exception:
                continue  # the link reconnects
            workers = max(int(ok.consumer_count or 1), 1)
            share = -(-self.sub.partitions // workers)
            if len(active) > share and self._consuming():
                await self._hand_over(random.choice(sorted(active)), workers)

    async def _release(self, index: int) -> bool:
        """Stop consuming partition ``index``: finish its message, wait until its ack was
        written, close its channel (the broker gives back what it still holds, then
        activates the next consumer). False if there was nothing to release."""
        async with self._lock:
            partition = self._partitions.get(index)
            if partition is None:
                return False
            partition.releasing = True
            partition.active = False
            busy = partition.busy
        try:
            if busy is not None:
                await asyncio.wait({busy})
            await self.handling.settle.written(partition.channel)
        finally:
            async with self._lock:
                if self._partitions.get(index) is partition:
                    del self._partitions[index]
                await close_quietly(partition.channel)
        return True

    async def _hand_over(self, index: int, workers: int) -> None:
        """Let another worker take partition ``index``: release it, and subscribe again, at
        the back of the line."""
        try:
            if not await self._release(index):
                return
            async with self._lock:
                main = self._channel
                ok = main is not None and not main.is_closed and self._consuming()
                if ok and main is not None and index not in self._partitions:
                    await self._subscribe(main, index)
        except Exception as exc:
            log.warning("handing partition %d over failed (%s)", index, exc, extra=self._log)
        log.info(
            "handed partition %d over (%d workers share %d partitions)",
            index,
            workers,
            self.sub.partitions,
            extra=self._log,
        )

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop taking messages, let in-flight ones finish for up to ``grace`` seconds,
        write their acks, then close: what is still unacked goes back first in line."""
        self.handling.stop()
        await self.gate.close()
        if self._in_flight:
            log.info("waiting for %d in-flight messages", len(self._in_flight), extra=self._log)
            await asyncio.wait(set(self._in_flight), timeout=grace)
        if self._rebalancer is not None:
            await cancel_and_wait(self._rebalancer)
        for partition in list(self._partitions.values()):
            if not partition.channel.is_closed:
                await self.handling.settle.written(partition.channel)
        await self.link.close()


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
