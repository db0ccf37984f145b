"""A minimal subscriber for cluster tests: consumes one subscriber queue through a
:class:`~bridge.connection.BrokerLink` (so it fails over across the cluster like the bridge
does), records each message id and acks only after recording it."""

from __future__ import annotations

import asyncio
import contextlib

from aiormq.abc import AbstractChannel, DeliveredMessage

from bridge.connection import BrokerLink
from bridge.topology import declare, receiver_topology, subscriber_topology


class RecordingConsumer:
    """Declares ``queue`` bound to every event of ``exchange`` and records what it handles."""

    def __init__(self, urls: tuple[str, ...], exchange: str, queue: str) -> None:
        self.exchange = exchange
        self.queue = queue
        self.topology = receiver_topology(exchange) + subscriber_topology(
            exchange, queue, ("*",), ()
        )
        self.handled: set[str] = set()
        self.deliveries = 0
        self._progress = asyncio.Event()
        self.link = BrokerLink(urls, self._on_channel, confirms=False, name="test consumer")

    async def _on_channel(self, channel: AbstractChannel) -> None:
        await declare(channel, self.topology)
        await channel.basic_qos(prefetch_count=200)
        await channel.basic_consume(self.queue, self._on_message)

    async def _on_message(self, message: DeliveredMessage) -> None:
        self.deliveries += 1
        self.handled.add(str(message.header.properties.message_id))
        assert message.delivery_tag is not None
        await message.channel.basic_ack(message.delivery_tag)
        self._progress.set()

    async def start(self, timeout: float = 30) -> None:
        if not await self.link.start(wait=timeout):
            raise RuntimeError("the test consumer could not reach the cluster")

    async def wait_for(self, wanted: set[str], timeout: float) -> set[str]:
        """Wait until every id in ``wanted`` was handled; the ids still missing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not wanted <= self.handled:
                    self._progress.clear()
                    await self._progress.wait()
        return wanted - self.handled

    async def close(self) -> None:
        await self.link.close()
