"""Every exchange and queue the bridge declares, as data, in one place.

``serve`` and ``topology`` declare :func:`receiver_topology`; each subscriber of ``worker``
adds :func:`subscriber_topology`. The same data prints with ``topology --print`` and becomes
``deploy/rabbitmq/definitions.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiormq
from aiormq.abc import AbstractChannel

from bridge.amqp.connection import close_quietly, connect_once
from bridge.core.contract import (
    HEADER_CLIENT_ID,
    HEADER_ORDER_ID,
    HEADER_WAREHOUSE_ID,
    routing_key,
    subscribed_events,
)
from bridge.core.records import deliveries_stream
from bridge.core.settings import Settings
from bridge.errors import CommandError

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
SINGLE_ACTIVE: dict[str, Any] = {"x-single-active-consumer": True}
"""A queue argument only (no policy sets it): changing it means re-creating the queue."""
DLQ_DELIVERY_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    """The destination: a queue, or an exchange when ``destination_type`` says so."""
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)
    destination_type: str = "queue"


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[Exchange, ...] = ()
    queues: tuple[Queue, ...] = ()
    bindings: tuple[Binding, ...] = ()

    def __add__(self, other: Topology) -> Topology:
        # Subscribers share some declarations (the filter sink): each is listed once.
        return Topology(
            _union(self.exchanges, other.exchanges),
            _union(self.queues, other.queues),
            _union(self.bindings, other.bindings),
        )

    def describe(self) -> list[str]:
        """One line per declaration, for ``topology --print``."""
        lines = [
            f"exchange {e.name} ({e.type}, durable){_args(e.arguments)}" for e in self.exchanges
        ]
        lines += [f"queue    {q.name} (durable){_args(q.arguments)}" for q in self.queues]
        lines += [
            f"binding  {b.exchange} -> {b.queue}"
            f"{' (exchange)' if b.destination_type == 'exchange' else ''} [{b.routing_key}]"
            f"{_args(b.arguments)}"
            for b in self.bindings
        ]
        return lines

    def without_queue(self, name: str) -> Topology:
        return Topology(
            self.exchanges, tuple(q for q in self.queues if q.name != name), self.bindings
        )


_T = TypeVar("_T")


def _union(first: tuple[_T, ...], second: tuple[_T, ...]) -> tuple[_T, ...]:
    items = list(first)
    for item in second:
        if item not in items:
            items.append(item)
    return tuple(items)


def _args(arguments: dict[str, Any]) -> str:
    if not arguments:
        return ""
    return " " + " ".join(f"{k}={v}" for k, v in sorted(arguments.items()))


def _suffixed(suffix: str) -> Callable[[str], str]:
    """The name of something that belongs to an exchange or a subscriber: its name and
    ``suffix`` (the names below, side by side, are the whole naming scheme)."""

    def name(owner: str) -> str:
        return owner + suffix

    return name


unrouted_name = _suffixed(".unrouted")
invalid_name = _suffixed(".invalid")
archive_name = _suffixed(".archive")
filtered_sink_name = _suffixed(".filtered")


@dataclass(frozen=True)
class ArchiveRetention:
    """How long and how much the archive stream keeps (``BRIDGE_ARCHIVE_MAX_AGE`` / ``_BYTES``).

    Every declaring path must pass the same values: RabbitMQ refuses a redeclare whose
    arguments differ (406), and streams only change retention through a policy."""

    max_age: str = "30D"
    max_bytes: int = 50_000_000_000

    def arguments(self) -> dict[str, Any]:
        # x-max-age must be a string ("30D"; an int is refused), x-max-length-bytes an int.
        return {
            "x-queue-type": "stream",
            "x-max-age": self.max_age,
            "x-max-length-bytes": int(self.max_bytes),
        }


def archive_retention(settings: Settings) -> ArchiveRetention | None:
    """The archive's retention from the settings, or ``None`` with ``BRIDGE_ARCHIVE=false``."""
    if not settings.archive:
        return None
    return ArchiveRetention(settings.archive_max_age, settings.archive_max_bytes)


def deliveries_retention(settings: Settings) -> ArchiveRetention:
    """The delivery records' stream keeps what the archive keeps (contract section 10); it
    is declared whether the archive is on or not."""
    return ArchiveRetention(settings.archive_max_age, settings.archive_max_bytes)


def receiver_topology(
    exchange: str,
    archive: ArchiveRetention | None = None,
    deliveries: ArchiveRetention | None = None,
) -> Topology:
    """The webhook exchange, its alternate exchange, the unrouted and invalid queues, and,
    given a retention, the archive stream bound with ``#``; given ``deliveries``, the stream
    ``<exchange>.deliveries`` of delivery records (unbound: records are published to it by
    name through the default exchange).

    A bound archive counts as a route for every message, so the alternate exchange then
    never fires and ``<exchange>.unrouted`` stays empty: the archive keeps what no
    subscriber wants. The alternate exchange stays declared either way (an exchange's
    arguments cannot change), so turning the archive off falls back to it."""
    unrouted = unrouted_name(exchange)
    invalid = invalid_name(exchange)
    queues: tuple[Queue, ...] = (Queue(unrouted, dict(QUORUM)), Queue(invalid, dict(QUORUM)))
    bindings: tuple[Binding, ...] = (
        Binding(unrouted, unrouted, ""),
        Binding(exchange, invalid, "invalid.#"),
    )
    if archive is not None:
        queues += (Queue(archive_name(exchange), archive.arguments()),)
        bindings += (Binding(exchange, archive_name(exchange), "#"),)
    if deliveries is not None:
        queues += (Queue(deliveries_stream(exchange), deliveries.arguments()),)
    return Topology(
        exchanges=(
            Exchange(exchange, "topic", {"alternate-exchange": unrouted}),
            Exchange(unrouted, "fanout"),
        ),
        queues=queues,
        bindings=bindings,
    )


def settings_topology(settings: Settings) -> Topology:
    """:func:`receiver_topology` as ``settings`` ask for it (archive on or off, the delivery
    records' stream always)."""
    return receiver_topology(
        settings.exchange, archive_retention(settings), deliveries_retention(settings)
    )


def retry_queue_name(subscriber: str, step: int) -> str:
    return f"{subscriber}.retry.{step}"


def partition_queue_name(subscriber: str, index: int) -> str:
    return f"{subscriber}.partition.{index}"


dlq_name = _suffixed(".dlq")
filter_name = _suffixed(".filter")
partitions_exchange_name = _suffixed(".partitions")
pauses_exchange_name = _suffixed(".pauses")
roster_name = _suffixed(".workers")
control_name = _suffixed(".control")
"""The queue holding the subscriber's operator state (:mod:`bridge.amqp.control`)."""


def control_queue(subscriber: str) -> Queue:
    """``<name>.control``: classic, at most one message, a new one dropping the old."""
    return Queue(control_name(subscriber), {"x-max-length": 1, "x-overflow": "drop-head"})


def subscriber_queue_names(
    name: str, retry_steps: int, ordered: bool = False, partitions: int = 0
) -> list[str]:
    """Every queue a subscriber owns (what ``dlq``, the dashboard and clean-ups know)."""
    if ordered:
        parts = [partition_queue_name(name, i) for i in range(partitions)]
        return [*parts, roster_name(name), dlq_name(name), control_name(name)]
    steps = [retry_queue_name(name, i) for i in range(retry_steps)]
    return [name, *steps, dlq_name(name), roster_name(name), control_name(name)]


def filter_arguments(clients: Sequence[str], warehouses: Sequence[str]) -> list[dict[str, Any]]:
    """One headers binding per accepted client (and/or warehouse, both when both are set).

    ``all-with-x``: a plain ``all`` ignores headers whose names start with ``x-``. Values are
    strings, as the receiver writes them; a message without the header matches none.
    """
    pairs: list[dict[str, str]]
    if clients and warehouses:
        pairs = [{HEADER_CLIENT_ID: c, HEADER_WAREHOUSE_ID: w} for c in clients for w in warehouses]
    elif clients:
        pairs = [{HEADER_CLIENT_ID: c} for c in clients]
    else:
        pairs = [{HEADER_WAREHOUSE_ID: w} for w in warehouses]
    return [{"x-match": "all-with-x", **pair} for pair in pairs]


def single_active_refusal(subscriber: str, reason: str) -> str | None:
    """The one-line fix when the broker refused ``subscriber``'s queue (``reason``, its
    PRECONDITION_FAILED) for an ``x-single-active-consumer`` that ``rate_limit`` changed."""
    if "x-single-active-consumer" not in reason or f"queue '{subscriber}'" not in reason:
        return None
    added = "current is none" in reason
    return (
        f"subscriber {subscriber!r}: its queue {subscriber} was declared "
        f"{'before' if added else 'with'} rate_limit, which gives it a single active consumer: "
        "re-create it (stop its workers, move its messages aside, delete it, start a worker, "
        "move them back: see docs/integrations.md, 'Migrating a queue')"
        + ("" if added else ", or keep rate_limit")
    )


def subscriber_topology(
    exchange: str,
    name: str,
    events: tuple[str, ...],
    retry_delays_ms: tuple[int, ...],
    *,
    clients: Sequence[str] = (),
    warehouses: Sequence[str] = (),
    ordered: bool = False,
    partitions: int = 4,
    single_active: bool = False,
) -> Topology:
    """A subscriber's queues and the way webhooks reach them.

    Plain: the quorum queue ``<name>`` bound to its events, one TTL queue per retry step
    that dead-letters back to it, and its dead-letter queue. ``single_active`` (a
    rate-limited subscriber) gives ``<name>`` a single active consumer: however many workers
    run the subscriber, one takes its messages at a time (the others stand by and take over
    when it goes), so that worker's limit is the subscriber's. The retry queues need none:
    nothing consumes them, they dead-letter back into ``<name>``.

    With ``clients`` / ``warehouses``: the events go to the headers exchange ``<name>.filter``
    first, which passes on only the matching webhooks; the rest never reach the queue. The
    filter's alternate exchange is ``<exchange>.filtered``, a fanout to a queue of length 0:
    a webhook filtered out counts as routed (the receiver's mandatory publish succeeds) and is
    dropped there, for this subscriber.

    ``ordered``: instead of ``<name>`` and the retry queues, the consistent-hash exchange
    ``<name>.partitions`` (plugin ``rabbitmq_consistent_hash_exchange``, hashing the header
    ``x-order-id``) spreads the messages over ``partitions`` quorum queues
    ``<name>.partition.<i>`` with a single active consumer each (already: ``single_active``
    changes nothing for them).

    Every subscriber has ``<name>.workers``, which never holds a message: each worker
    process consumes it, so its consumer count is the number of workers running (an ordered
    subscriber shares its partitions by it; the console tells "no worker" from "paused").

    Every subscriber also has ``<name>.control``, holding its operator state (paused or not;
    :mod:`bridge.amqp.control`): classic (one small message, nothing worth replicating; a
    quorum queue would need a leader to answer every worker's poll), at most one message,
    a new one dropping the old.

    Always: the fanout exchange ``<name>.pauses``, through which a worker whose target
    asked for a pause (``Retry-After``) tells the others (each binds a queue of its own,
    exclusive to its connection, so nothing is kept when no worker runs).
    """
    wanted = subscribed_events(events)
    # A message the broker itself gives up on (a quorum queue's delivery limit, default 20
    # on RabbitMQ 4) lands in the DLQ instead of being dropped.
    main = {**QUORUM, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq_name(name)}
    exchanges: list[Exchange] = [Exchange(pauses_exchange_name(name), "fanout")]
    queues: list[Queue] = []
    bindings: list[Binding] = []
    if ordered:
        target, target_type = partitions_exchange_name(name), "exchange"
        exchanges.append(Exchange(target, "x-consistent-hash", {"hash-header": HEADER_ORDER_ID}))
        for index in range(partitions):
            queue = partition_queue_name(name, index)
            queues.append(Queue(queue, {**main, **SINGLE_ACTIVE}))
            # The routing key of a consistent-hash binding is its weight: equal shares.
            bindings.append(Binding(target, queue, "1"))
    else:
        target, target_type = name, "queue"
        queues.append(Queue(name, {**main, **SINGLE_ACTIVE} if single_active else main))
        for step, delay in enumerate(retry_delays_ms):
            queues.append(
                Queue(
                    retry_queue_name(name, step),
                    {
                        **QUORUM,
                        "x-message-ttl": delay,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": name,
                        # Quorum queues dead-letter at most once unless told otherwise.
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    },
                )
            )
    # `dlq list` hands every message back to the DLQ, and RabbitMQ 4.0-4.2 drop a quorum
    # queue's message once it was handed back 20 times: a dead letter must never expire so.
    queues.append(Queue(dlq_name(name), {**QUORUM, "x-delivery-limit": DLQ_DELIVERY_LIMIT}))
    queues.append(Queue(roster_name(name), dict(QUORUM)))
    queues.append(control_queue(name))
    entry, entry_type = target, target_type
    if clients or warehouses:
        entry, entry_type = filter_name(name), "exchange"
        sink = filtered_sink_name(exchange)
        exchanges.append(Exchange(entry, "headers", {"alternate-exchange": sink}))
        exchanges.append(Exchange(sink, "fanout"))
        # Classic on purpose: nothing is ever stored (length 0), so nothing to replicate.
        queues.append(Queue(sink, {"x-max-length": 0}))
        bindings.append(Binding(sink, sink, ""))
        for arguments in filter_arguments(clients, warehouses):
            bindings.append(Binding(entry, target, "", arguments, target_type))
    bindings[:0] = [Binding(exchange, entry, routing_key(e), {}, entry_type) for e in wanted]
    return Topology(tuple(exchanges), tuple(queues), tuple(bindings))


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare everything in ``topology`` on an aiormq channel; idempotent."""
    for exchange in topology.exchanges:
        await channel.exchange_declare(
            exchange.name,
            exchange_type=exchange.type,
            durable=True,
            arguments=exchange.arguments or None,
        )
    for queue in topology.queues:
        await channel.queue_declare(queue.name, durable=True, arguments=queue.arguments or None)
    for binding in topology.bindings:
        if binding.destination_type == "exchange":
            await channel.exchange_bind(
                binding.queue,
                binding.exchange,
                routing_key=binding.routing_key,
                arguments=binding.arguments or None,
            )
        else:
            await channel.queue_bind(
                binding.queue,
                binding.exchange,
                routing_key=binding.routing_key,
                arguments=binding.arguments or None,
            )


async def delete(channel: AbstractChannel, topology: Topology) -> None:
    """Remove everything in ``topology`` (for tests and ``topology --delete``)."""
    for queue in topology.queues:
        await channel.queue_delete(queue.name)
    for exchange in topology.exchanges:
        await channel.exchange_delete(exchange.name)


async def declare_topology(amqp_urls: Sequence[str], topology: Topology) -> None:
    """Connect once and declare ``topology``: idempotent; an argument clash with what
    exists is a :class:`CommandError` quoting the broker."""
    connection = await connect_once(amqp_urls)
    try:
        channel = await connection.channel()
        await declare(channel, topology)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        reason = str(exc.args[0] if exc.args else exc)
        for queue in topology.queues:
            migrate = single_active_refusal(queue.name, reason)
            if migrate is not None:
                raise CommandError(migrate) from None
        raise CommandError(
            f"the broker refused a declaration ({reason}): run with the settings it was "
            "declared with (for the archive: BRIDGE_ARCHIVE_MAX_AGE and "
            "BRIDGE_ARCHIVE_MAX_BYTES), or delete it first"
        ) from None
    finally:
        await close_quietly(connection)
