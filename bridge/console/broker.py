"""The console's one broker link: opened when the console starts, kept up in the background
(reconnecting, failing over across ``BRIDGE_AMQP_URL``), shared by every refresh of every
page and every action (dead letters, orders, replays, pause), and closed when the console
stops. A page never opens a connection of its own: it borrows this one
(:func:`bridge.amqp.connection.borrow`; a :class:`ConsoleBroker` is a shared connection).

Pages do not wait for a broker that is away: :meth:`ConsoleBroker.connection` waits a few
seconds at most, then raises :class:`CommandError` (the page shows it; the link goes on
trying). Queue figures are read on one plain channel, reopened when the broker closes it (a
passive declare of a missing queue does), one reader at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web
from aiormq.abc import AbstractChannel, AbstractConnection

from bridge.amqp.connection import BrokerLink, close_quietly
from bridge.errors import CommandError

WAIT_SECONDS = 5.0
"""How long a page waits for the link to be up before saying the broker is away."""


class ConsoleBroker:
    """The link, and the channel queue figures are read on (``async with read_lock``)."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.link = BrokerLink(tuple(urls), confirms=False, name="mintsoft-bridge console")
        self.read_lock = asyncio.Lock()
        self._channel: AbstractChannel | None = None

    async def start(self) -> None:
        await self.link.start()  # in the background: the console serves while it connects

    async def close(self) -> None:
        if self._channel is not None:
            await close_quietly(self._channel)
            self._channel = None
        await self.link.close()

    async def connection(self) -> AbstractConnection:
        """The link's connection, waiting up to :data:`WAIT_SECONDS` for it."""
        await self.link.wait_up(WAIT_SECONDS)
        connection = self.link.connection
        if connection is None:
            raise CommandError(
                "no connection to the broker: check BRIDGE_AMQP_URL and that RabbitMQ runs "
                "(the console keeps trying)"
            )
        return connection

    def renew(self) -> None:
        """Drop the link's connection (a channel of a page would not close): it reconnects."""
        self.link.renew()

    async def read_channel(self) -> AbstractChannel:
        """The channel for passive declares, opened again when the broker closed it."""
        if self._channel is None or self._channel.is_closed:
            connection = await self.connection()
            self._channel = await connection.channel(publisher_confirms=False)
        return self._channel

    def read_channel_lost(self) -> None:
        """The broker closed the channel (a passive declare of a missing queue)."""
        self._channel = None


def keep_link(app: web.Application, broker: ConsoleBroker) -> None:
    """Open ``broker``'s link when ``app`` starts and close it when it stops."""

    async def open_link(_app: web.Application) -> None:
        await broker.start()

    async def close_link(_app: web.Application) -> None:
        await broker.close()

    app.on_startup.append(open_link)
    app.on_cleanup.append(close_link)
