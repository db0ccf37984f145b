"""What the overview reads from the broker: each subscriber queue's depth and consumers, by
passive ``queue.declare`` over AMQP (so it works without the management plugin), on the
console's one link (:mod:`bridge.console.broker`): no connection is opened per refresh.

A passive declare reports ready messages and consumers; RabbitMQ does not report unacked
messages over AMQP, so the pages show that count as unknown and the bound on it (consumers x
prefetch) only as a limit.
A queue that does not exist is reported as missing, never created. Every call is bounded.

Also read per subscriber: its operator state (``<name>.control``, read and left in place:
:mod:`bridge.amqp.control`) and how many workers run it (consumers of ``<name>.workers``),
from which :mod:`bridge.console.subscriber_state` says what the subscriber is doing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiormq.exceptions import ChannelNotFoundEntity

from bridge.amqp.control import ControlState, read_state
from bridge.amqp.topology import dlq_name, partition_queue_name, retry_queue_name, roster_name
from bridge.console.broker import ConsoleBroker
from bridge.core.durations import format_duration
from bridge.core.tasks import within
from bridge.worker.subscribers import Subscriber

RPC_TIMEOUT = 5.0


@dataclass(frozen=True)
class QueueStat:
    name: str
    ready: int | None  # None: the queue does not exist
    consumers: int | None


@dataclass(frozen=True)
class SubscriberStat:
    subscriber: Subscriber
    main: QueueStat
    steps: tuple[tuple[str, QueueStat], ...]  # (delay as written, queue)
    dlq: QueueStat
    control: ControlState | None = None
    """The operator state; ``None``: its queue is not declared yet."""
    workers: int | None = None
    """Worker processes running the subscriber; ``None``: not known (older workers)."""

    @property
    def waiting_in_retries(self) -> int:
        return sum(stat.ready or 0 for _, stat in self.steps)

    @property
    def prefetch(self) -> int:
        """What each consumer may hold unacked: an ordered subscriber's partitions take one."""
        return 1 if self.subscriber.ordered else self.subscriber.prefetch

    @property
    def in_flight_bound(self) -> int:
        """The most its consumers may hold unacked at once (how many they do is not known)."""
        return (self.main.consumers or 0) * self.prefetch


class _Reader:
    def __init__(self, broker: ConsoleBroker) -> None:
        self.broker = broker

    async def stat(self, queue: str) -> QueueStat:
        channel = await self.broker.read_channel()
        try:
            ok = await within(RPC_TIMEOUT, channel.queue_declare(queue, passive=True))
        except ChannelNotFoundEntity:
            self.broker.read_channel_lost()
            return QueueStat(queue, None, None)
        return QueueStat(queue, int(ok.message_count or 0), int(ok.consumer_count or 0))

    async def control(self, subscriber: str) -> ControlState | None:
        channel = await self.broker.read_channel()
        try:
            # Shown, not acted on, and read again on the next poll: no re-reads of an empty
            # queue (they would add 0.3 s a never-paused subscriber to every page).
            return await read_state(channel, subscriber, rechecks=())
        except ChannelNotFoundEntity:
            self.broker.read_channel_lost()
            return None


async def _main(reader: _Reader, sub: Subscriber) -> QueueStat:
    """The subscriber's queue; for an ordered one, its partition queues added up."""
    if not sub.ordered:
        return await reader.stat(sub.name)
    parts = [await reader.stat(partition_queue_name(sub.name, i)) for i in range(sub.partitions)]
    if any(part.ready is None for part in parts):
        return QueueStat(sub.name, None, None)
    return QueueStat(
        f"{sub.name}.partition.*",
        sum(part.ready or 0 for part in parts),
        sum(part.consumers or 0 for part in parts),
    )


async def subscriber_stats(
    broker: ConsoleBroker, subscribers: Sequence[Subscriber]
) -> list[SubscriberStat]:
    """Depth and consumers of every subscriber's queue, retry steps and DLQ."""
    async with broker.read_lock, asyncio.timeout(RPC_TIMEOUT * 4):
        reader = _Reader(broker)
        stats = []
        for sub in subscribers:
            main = await _main(reader, sub)
            steps = []
            # An ordered subscriber waits its retries out in process: no retry queues.
            delays = () if sub.ordered else sub.retry_delays_ms
            for step, delay in enumerate(delays):
                stat = await reader.stat(retry_queue_name(sub.name, step))
                steps.append((format_duration(delay / 1000), stat))
            dlq = await reader.stat(dlq_name(sub.name))
            control = await reader.control(sub.name)
            workers = (await reader.stat(roster_name(sub.name))).consumers
            stats.append(SubscriberStat(sub, main, tuple(steps), dlq, control, workers))
        return stats
