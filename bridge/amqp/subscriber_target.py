"""Where a copy meant for one subscriber is published (``dlq replay``, ``archive replay``).

A plain subscriber: straight to its queue ``<name>`` through the default exchange, so no
other subscriber sees the copy. An ordered subscriber has no ``<name>`` queue: the copy goes
through its ``<name>.partitions`` exchange, which hashes ``x-order-id``, so it joins its
order's partition behind what is already queued there.

:func:`partitions_exchange` finds out which with a passive declare on a channel of its own
(a missing exchange closes its channel); a broker that does not answer within ``timeout``
raises :class:`TimeoutError`, other broker errors pass through.
"""

from __future__ import annotations

from aiormq.abc import AbstractConnection
from aiormq.exceptions import ChannelNotFoundEntity

from bridge.amqp.connection import close_quietly
from bridge.amqp.topology import partitions_exchange_name
from bridge.core.tasks import within


async def partitions_exchange(
    connection: AbstractConnection, name: str, timeout: float = 10.0
) -> str | None:
    """``<name>.partitions`` when ``name`` is an ordered subscriber, else None."""
    exchange = partitions_exchange_name(name)
    probe = await within(timeout, connection.channel(publisher_confirms=False))
    try:
        await within(timeout, probe.exchange_declare(exchange, passive=True))
    except ChannelNotFoundEntity:
        return None
    await close_quietly(probe)
    return exchange


def route(name: str, exchange: str | None) -> tuple[str, str]:
    """``(exchange, routing key)`` of a copy for subscriber ``name``, given what
    :func:`partitions_exchange` found."""
    # The consistent-hash exchange hashes x-order-id, not the routing key.
    return (exchange, "") if exchange else ("", name)
