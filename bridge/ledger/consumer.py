"""The ledger's stream consumers, without aiormq's cost per message.

aiormq keeps the connection (handshake, TLS, heartbeats, every method and its answer); the
deliveries of the consumer channels never reach it. :class:`SplittingTransport` is the
connection's transport factory (a public parameter of ``aiormq.Connection``, pinned as
``aiormq==7.2.4``): it opens the socket as aiormq's own factories do, but puts a
:class:`~bridge.ledger.deliveries_wire.FrameSplitter` between the socket and aiormq's
``StreamReader``. :func:`consume` opens a channel, asks the splitter to take its deliveries,
and consumes a stream from an offset; every delivery reaches the callback synchronously, in
order, as a :class:`~bridge.ledger.deliveries_wire.Delivery` (no task, no queue per
message). Acks stay aiormq's (``basic_ack(tag, multiple=True)``, once per batch).

Guarantees and how it fails:

- A delivery the splitter did not take (no splitter on the connection: another factory, or
  :func:`check` found aiormq changed) reaches the same callback through aiormq's
  ``basic_consume``, converted: slower, never lost.
- aiormq cancels a connection from which it saw no frame for three heartbeats; while only
  deliveries arrive (the broker sends no heartbeat then) the reader hands aiormq a
  heartbeat frame at most every :data:`HEARTBEAT_EVERY` seconds instead.
- Bytes the splitter cannot read after the handshake abort the connection (a delivery may
  be half read): the owner reconnects and reads on from the last offset it took.
- A consumer channel the broker closes (or cancels) is reported to ``on_lost``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from importlib.metadata import version
from typing import Any, Final, SupportsIndex

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from aiormq.connection import TransportFactory
from yarl import URL

from bridge.ledger.deliveries_wire import HEARTBEAT_FRAME, Consumer, Delivery, FrameSplitter

log = logging.getLogger("bridge.ledger.consumer")

HEARTBEAT_EVERY: Final = 1.0
"""Seconds between the heartbeat frames handed to aiormq while only deliveries arrive."""
READ_LIMIT: Final = 2**16
AIORMQ_VERSION: Final = version("aiormq")


def check() -> str | None:
    """``None`` when this aiormq takes a transport factory as this module needs, else why
    not (then the connection is aiormq's own and deliveries go the slow way)."""
    parameters = inspect.signature(aiormq.Connection.__init__).parameters
    if "transport_factory" not in parameters:
        return f"aiormq {AIORMQ_VERSION}: Connection takes no transport_factory"
    create = getattr(TransportFactory, "create", None)
    if create is None or not getattr(create, "__isabstractmethod__", False):
        return f"aiormq {AIORMQ_VERSION}: TransportFactory.create is not the factory method"
    return None


class _SplittingReader(asyncio.StreamReader):
    """aiormq's ``StreamReader``: what the splitter hands on, plus heartbeats."""

    def __init__(
        self,
        splitter: FrameSplitter,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(limit=READ_LIMIT, loop=loop)
        self.splitter = splitter
        self._clock = clock
        self._handed_at = clock()

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        splitter = self.splitter
        taken = splitter.taken
        handed = splitter.feed(bytes(data))
        if splitter.broken and splitter.frames and handed:
            log.warning("unreadable AMQP bytes from the broker; dropping the connection")
            handed = b""
            transport = getattr(self, "_transport", None)
            if transport is not None:
                transport.abort()
        now = self._clock()
        if handed:
            self._handed_at = now
            super().feed_data(handed)
        elif splitter.taken != taken and now - self._handed_at >= HEARTBEAT_EVERY:
            self._handed_at = now
            super().feed_data(HEARTBEAT_FRAME)


class SplittingTransport(TransportFactory):
    """A transport factory whose connections split their deliveries off; :attr:`latest`
    is the splitter of the connection opened last (its owner opens one at a time)."""

    def __init__(self) -> None:
        self.latest: FrameSplitter | None = None

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if url.scheme == "amqps" and provider else None
        loop = asyncio.get_running_loop()
        splitter = FrameSplitter()
        reader = _SplittingReader(splitter, loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, url.host or "localhost", url.port or 5672, ssl=ssl, **kwargs
            )
        except OSError as exc:
            raise aiormq.exceptions.AMQPConnectionError(*exc.args) from exc
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self.latest = splitter
        return reader, writer


def from_message(message: DeliveredMessage) -> Delivery:
    """A delivery aiormq parsed, as the splitter would have (the slow way)."""
    properties = message.header.properties
    stamp = properties.timestamp
    return Delivery(
        tag=int(message.delivery_tag or 0),
        routing_key=message.routing_key or "",
        message_id=properties.message_id,
        type=properties.message_type,
        stamp=None if stamp is None else int(stamp.timestamp()),
        headers=dict(properties.headers or {}),
        body=bytes(message.body),
    )


async def consume(
    connection: AbstractConnection,
    splitter: FrameSplitter | None,
    stream: str,
    offset: int,
    prefetch: int,
    consumer_for: Callable[[AbstractChannel], Consumer],
    on_lost: Callable[[AbstractChannel], None],
) -> AbstractChannel:
    """Consume ``stream`` from ``offset`` on a channel of its own, each delivery to
    ``consumer_for(channel)``; the channel (ack on it). ``on_lost(channel)`` runs when it
    closes."""
    channel = await connection.channel(publisher_confirms=False)
    await channel.basic_qos(prefetch_count=prefetch)
    on_delivery = consumer_for(channel)
    number = int(getattr(channel, "number", -1))
    if splitter is not None and number > 0 and not splitter.broken:
        splitter.take(number, on_delivery)

    def closed(_: asyncio.Future[Any]) -> None:
        if splitter is not None:
            splitter.drop(number, on_delivery)
        on_lost(channel)

    channel.closing.add_done_callback(closed)

    async def slow(message: DeliveredMessage) -> None:
        on_delivery(from_message(message))

    # no_ack must be False on a stream: True closes the whole connection.
    await channel.basic_consume(stream, slow, no_ack=False, arguments={"x-stream-offset": offset})
    return channel
