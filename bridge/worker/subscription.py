"""One subscriber at work: consume ``<name>`` and hand each message to its
:class:`~bridge.worker.handling.Handling` (tries, records, ack, retry or dead-letter).

The subscriber has its own :class:`~bridge.amqp.connection.BrokerLink` (connection and
confirm channel, re-established after a loss, topology re-declared, consumer re-registered).
A message is acked only after the handler returned, or after its copy on the next step
(``<name>.retry.<i>`` or ``<name>.dlq``) was confirmed by the broker: a crash at any point
repeats a delivery at worst, never loses one.

What every kind of subscription has (breaker, topology, link, :class:`Handling`, pauses,
pause gate) is built once, by :class:`Consuming`; the ordered one
(:mod:`bridge.worker.ordered`) shares it and consumes its own way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import ChannelPreconditionFailed

from bridge.amqp.connection import BrokerLink
from bridge.amqp.pipeline import no_ack_delivery, set_prefetch
from bridge.amqp.topology import (
    Topology,
    control_name,
    declare,
    roster_name,
    settings_topology,
    single_active_refusal,
)
from bridge.core.settings import Settings
from bridge.core.tasks import cancel_and_wait
from bridge.errors import CommandError
from bridge.worker.forwarder import Forwarder
from bridge.worker.handling import Handling, SubscriptionKind
from bridge.worker.pause import PauseGate
from bridge.worker.pauses import SharedPauses
from bridge.worker.retry import Ladder
from bridge.worker.subscribers import Handler, Subscriber

log = logging.getLogger("bridge.worker.subscription")

SHUTDOWN_GRACE = 8.0
"""Seconds in-flight handlers get to finish on SIGTERM (docker stops after 10)."""


async def declare_or_fail(
    channel: AbstractChannel, topology: Topology, sub: Subscriber, failed: asyncio.Future[None]
) -> None:
    """Declare a subscriber's topology; a mismatch the operator must fix also sets
    ``failed`` (the worker then stops with one line naming the fix)."""
    try:
        await declare(channel, topology)
    except ChannelPreconditionFailed as exc:
        migrate = single_active_refusal(sub.name, str(exc))
        if migrate is not None and not failed.done():
            failed.set_exception(CommandError(migrate))
        if not failed.done():
            failed.set_exception(
                CommandError(
                    f"subscriber {sub.name!r}: a queue or exchange exists with other "
                    f"arguments ({exc}): delete the old queues of this subscriber (after "
                    "draining them) or keep the retry_delays, filters and partitions they "
                    "were declared with"
                )
            )
        raise
    except Exception as exc:
        if "x-consistent-hash" in str(exc) and not failed.done():
            failed.set_exception(
                CommandError(
                    f"subscriber {sub.name!r}: ordered = true needs RabbitMQ's plugin "
                    "rabbitmq_consistent_hash_exchange: run rabbitmq-plugins enable "
                    "rabbitmq_consistent_hash_exchange"
                )
            )
        raise


class Consuming:
    """What every kind of subscription has, built once: the forwarder's breaker (a
    forwarder pauses its subscriber while its target is down; a handler cannot), the
    topology it declares, its own link to the broker (:meth:`_on_channel` runs on every new
    channel), its :class:`Handling` (given the kind's ladder and how a message is given back
    or held: a :class:`SubscriptionKind`), the shared pauses, the operator's pause gate, and
    what it tells its runner (``ready``, ``failed``). The kinds differ in how they consume,
    not in these."""

    def __init__(
        self,
        settings: Settings,
        sub: Subscriber,
        handler: Handler,
        kind: SubscriptionKind,
        *,
        records: bool = True,
    ) -> None:
        self.sub = sub
        self.handler = handler
        self.breaker = handler.breaker if isinstance(handler, Forwarder) else None
        # <name>.control is declared by the pause gate, on a channel of its own: a classic
        # queue whose node is down must not stop the worker from consuming.
        own = sub.topology(settings.exchange).without_queue(control_name(sub.name))
        self.topology = settings_topology(settings) + own
        name = f"mintsoft-bridge worker {sub.name}"
        self.link = BrokerLink(settings.amqp_urls, self._on_channel, name=name)
        self.handling = Handling(
            settings.exchange, sub, handler, kind, self.link, paused=self._paused, records=records
        )
        self.pauses = SharedPauses(sub.name, self.handling.pacer)
        self.gate = PauseGate(sub.name, self.link)
        self.ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.failed: asyncio.Future[None] = self._loop.create_future()
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._log = {"subscriber": sub.name}

    def _paused(self) -> bool:
        raise NotImplementedError

    async def _on_channel(self, channel: AbstractChannel) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        await self.link.start()
        self.gate.start()


async def on_roster(message: DeliveredMessage) -> None:
    """``<name>.workers`` never holds a message: consuming it only makes this worker count."""
    no_ack_delivery(message)  # should one come, its tag must not hold back the acks


class Subscription(Consuming):
    """One subscriber at work: its queue's consumer, on the parts of :class:`Consuming`."""

    def __init__(
        self, settings: Settings, sub: Subscriber, handler: Handler, *, records: bool = True
    ) -> None:
        ladder = Ladder(sub.name, sub.retry_delays_ms, sub.in_process_tries)
        kind = SubscriptionKind(ladder, give_back=self._give_back)
        super().__init__(settings, sub, handler, kind, records=records)
        self._consumer_tag: str | None = None
        self._background: set[asyncio.Task[Any]] = set()
        if self.breaker is not None:
            self.breaker.on_change(lambda _open: self._spawn(self._sync_consumer()))
        self.gate.on_change(lambda _paused: self._spawn(self._sync_consumer()))

    def _paused(self) -> bool:
        """Paused by an operator, or while the target is down."""
        return self.gate.paused or (self.breaker is not None and self.breaker.is_open)

    async def _give_back(self, delivered: DeliveredMessage) -> None:
        await self.handling.settle(delivered, ack=False)

    async def _on_channel(self, channel: AbstractChannel) -> None:
        await declare_or_fail(channel, self.topology, self.sub, self.failed)
        await self.pauses.attach(channel)
        await set_prefetch(channel, self.sub.prefetch)
        await self.gate.refresh(channel.connection)  # started while paused: stays paused
        async with self._lock:
            self._channel = channel
            self._consumer_tag = None
            # Counted as a running worker (the console's "no worker" versus "paused").
            await channel.basic_consume(roster_name(self.sub.name), on_roster, no_ack=True)
            if not self.handling.stopping and not self._paused():
                ok = await channel.basic_consume(self.sub.name, self._deliver)
                self._consumer_tag = ok.consumer_tag
        self.ready.set()
        state = "consuming" if self._consumer_tag is not None else "not consuming (paused)"
        log.info("%s %s", state, self.sub.name, extra=self._log)

    async def _sync_consumer(self) -> None:
        """Start or cancel the consumer so it matches ``not stopping and not paused``."""
        async with self._lock:
            channel = self._channel
            if channel is None or channel.is_closed:
                return
            wanted = not self.handling.stopping and not self._paused()
            try:
                if wanted and self._consumer_tag is None:
                    ok = await channel.basic_consume(self.sub.name, self._deliver)
                    self._consumer_tag = ok.consumer_tag
                    log.info("resumed consuming %s", self.sub.name, extra=self._log)
                elif not wanted and self._consumer_tag is not None:
                    tag, self._consumer_tag = self._consumer_tag, None
                    await channel.basic_cancel(tag)
                    log.info("stopped consuming %s", self.sub.name, extra=self._log)
            except Exception as exc:  # the link reconnects and calls _on_channel again
                log.warning("consumer change failed (%s)", exc, extra=self._log)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _deliver(self, delivered: DeliveredMessage) -> None:
        if self.handling.stopping or self._paused():
            # Not ours to try now: back to the queue, no attempt spent.
            await self._give_back(delivered)
            return
        # The loop given: without it, current_task() looks the running loop up (3x the cost).
        task = asyncio.current_task(self._loop)
        assert task is not None
        self._in_flight.add(task)
        try:
            await self.handling.process(delivered, task)
        finally:
            self._in_flight.discard(task)

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop consuming, let in-flight messages finish for up to ``grace`` seconds, then
        close: what is still unacked goes back to the queue."""
        self.handling.stop()
        await self.gate.close()
        await self._sync_consumer()
        if self._in_flight:
            log.info("waiting for %d in-flight messages", len(self._in_flight), extra=self._log)
            await asyncio.wait(set(self._in_flight), timeout=grace)
        for task in set(self._background):
            await cancel_and_wait(task)
        channel = self._channel
        if channel is not None and not channel.is_closed:
            await self.handling.settle.written(channel)  # the acks leave before the close
        await self.link.close()
