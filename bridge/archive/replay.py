"""Copying a window of archived webhooks into one subscriber's queue (``archive replay``).

Each copy is the archived body byte for byte, with its original properties and headers plus
``x-replayed-at`` and ``x-replay-id``. It goes through the default exchange straight to the
subscriber's queue (an ordered subscriber's: through its partitions exchange, into its
order's partition; see :mod:`bridge.amqp.subscriber_target`), so no other subscriber sees it
and the archive (bound to the webhook exchange) never stores it again. Every publish is
``mandatory`` and confirmed, with at most :data:`WINDOW` unconfirmed: a replay that is
killed loses nothing it reported as sent, and can simply be run again (the copies that were
confirmed then arrive twice, with the same ``message_id``, which is how a subscriber tells
them apart).

Given the target's :class:`~bridge.archive.audience.Audience`, only the webhooks that
subscriber takes are copied (and counted by a dry run); the others are counted by why they
were left out. Given a :class:`~bridge.archive.pace.Pacer`, the copies go no faster than its
rate.

Fails with :class:`SettingsError` for a target that is not a subscriber's queue name, and
:class:`CommandError` for a missing queue, a refused publish or a broker that stops
answering.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic

from bridge.amqp.audit import audit_on
from bridge.amqp.connection import Brokers, borrow, close_quietly
from bridge.amqp.deliveries import Acting, records_settled, send_record
from bridge.amqp.publisher import Outcome, Pending, confirms
from bridge.amqp.subscriber_target import partitions_exchange, route
from bridge.archive.audience import Audience, Reason
from bridge.archive.end import RPC_TIMEOUT, bounded
from bridge.archive.pace import Pacer
from bridge.archive.reader import (
    ArchivedWebhook,
    ArchiveQuery,
    copy_properties,
    header_text,
    scan,
)
from bridge.core.audit import Action, Via
from bridge.core.contract import (
    EVENTS,
    HEADER_CLIENT_ID,
    HEADER_REPLAY_ID,
    HEADER_REPLAYED_AT,
    HEADER_WAREHOUSE_ID,
    rfc3339,
)
from bridge.core.records import DeliveryRecord, Source
from bridge.core.records import Outcome as Recorded
from bridge.core.settings import SettingsError
from bridge.errors import CommandError

WINDOW = 256
"""Copies in flight (published, not yet confirmed) at most."""

Progress = Callable[[int, int | None], None]
"""Called with (copies confirmed so far, total when known)."""

_NOT_A_SUBSCRIBER = re.compile(r"\.(archive|unrouted|invalid|dlq|retry\.\d+)$")


LeftOut = Counter[tuple[Reason, str]]
"""Webhooks of the window the target does not take, by (why, which event / client /
warehouse id)."""


@dataclass(frozen=True)
class ReplayResult:
    replay_id: str
    matched: int
    sent: int  # == matched unless dry_run (then 0)
    left_out: LeftOut = field(default_factory=Counter)


def _no_progress(sent: int, total: int | None) -> None:
    return None


def _check_target(to: str) -> None:
    if not to or _NOT_A_SUBSCRIBER.search(to) or to.startswith("amq."):
        raise SettingsError(
            f"--to {to!r} is not a subscriber: give the name = ... of a [[subscriber]] "
            "(its queue, not its .dlq or .retry.N, nor a queue of the exchange)"
        )


async def _target(connection: AbstractConnection, to: str) -> str | None:
    """The ordered subscriber ``to``'s partitions exchange, else None once its queue is
    known to exist."""
    exchange = await bounded(partitions_exchange(connection, to), "a passive declare")
    if exchange is None:
        await _require_queue(connection, to)
    return exchange


async def _require_queue(connection: AbstractConnection, to: str) -> None:
    channel = await bounded(connection.channel(), "opening a channel")
    try:
        await bounded(channel.queue_declare(to, passive=True), "a passive declare")
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise CommandError(
            f"subscriber queue {to} does not exist: check --to, or declare it by starting its "
            "worker once or with `mintsoft-bridge topology --config FILE`"
        ) from None
    await close_quietly(channel)


def replay_copy(webhook: ArchivedWebhook, replay_id: str, now: float) -> Basic.Properties:
    """The properties of ``webhook``'s copy: all of its own, plus the two replay headers."""
    headers = {**webhook.headers, HEADER_REPLAYED_AT: rfc3339(now), HEADER_REPLAY_ID: replay_id}
    return copy_properties(webhook.properties, headers)


class _Copier:
    """Publishes copies with confirms, at most :data:`WINDOW` of them unconfirmed."""

    def __init__(
        self,
        channel: AbstractChannel,
        to: str,
        progress: Progress,
        exchange: str | None,
        acting: Acting | None,
    ) -> None:
        self.channel = channel
        self.confirms = confirms(channel)
        self.to = to
        self.exchange, self.routing_key = route(to, exchange)
        self.progress = progress
        self.acting = acting
        self.pending: deque[tuple[Pending, ArchivedWebhook]] = deque()
        self.sent = 0

    async def copy(self, webhook: ArchivedWebhook, properties: Basic.Properties) -> None:
        sent = self.confirms.send(
            webhook.body,
            exchange=self.exchange,
            routing_key=self.routing_key,
            properties=properties,
        )
        self.pending.append((sent, webhook))
        if len(self.pending) >= WINDOW:
            await self._settle_oldest()

    async def finish(self) -> None:
        while self.pending:
            await self._settle_oldest()

    def abandon(self) -> None:
        for pending, _webhook in self.pending:
            pending.expire()

    async def _settle_oldest(self) -> None:
        deadline = asyncio.get_running_loop().time() + RPC_TIMEOUT
        pending, webhook = self.pending.popleft()
        outcome = await self.confirms.wait(pending, deadline)
        if outcome is Outcome.RETURNED:
            raise CommandError(
                f"the broker returned a copy: queue {self.to} was deleted during the replay; "
                f"{self.sent} copies were confirmed, run it again"
            )
        if outcome is Outcome.TIMED_OUT:
            raise CommandError(
                f"the broker did not confirm a copy within {RPC_TIMEOUT:.0f} s: check its "
                "health (rabbitmqctl status) and its memory and disk alarms; "
                f"{self.sent} copies were confirmed, run it again"
            )
        if outcome is not Outcome.CONFIRMED:
            raise CommandError(
                f"the broker refused a copy (queue {self.to} full, or a disk alarm); "
                f"{self.sent} copies were confirmed: fix the cause and run it again"
            )
        self.sent += 1
        if self.acting is not None:
            send_record(self.channel, self.acting.exchange, replayed(webhook, self.to, self.acting))
        self.progress(self.sent, None)


def replayed(webhook: ArchivedWebhook, to: str, acting: Acting) -> DeliveryRecord:
    """The ``replayed`` record of ``webhook``'s copy into subscriber ``to``."""
    return acting.record(
        Recorded.REPLAYED,
        message_id=webhook.message_id,
        subscriber=to,
        event=webhook.event,
        order_id=webhook.order_id,
        order_number=webhook.order_number,
        attempt=1,
    )


async def replay(
    broker: Brokers,
    exchange: str,
    query: ArchiveQuery,
    to: str,
    *,
    dry_run: bool = False,
    on_progress: Progress = _no_progress,
    limit: int | None = None,
    operator: str | None = None,
    via: Via = Via.CLI,
    audience: Audience | None = None,
    pacer: Pacer | None = None,
) -> ReplayResult:
    """Copy each webhook matching ``query`` into queue ``to``; with ``dry_run``, only count;
    with ``limit``, at most that many (the number an operator confirmed); with ``audience``,
    only those it takes (the others are counted in :attr:`ReplayResult.left_out`); with
    ``pacer``, each copy waits for it. Each copy confirmed leaves a ``replayed`` delivery
    record (source ``archive-replay``, by ``operator``) in ``<exchange>.deliveries``, and the
    replay (not a dry run) one audit record (made ``via`` the console or the command line: the
    window, the events, how many were sent, and why it stopped if it did; never failing the
    replay).

    Without an event filter, quarantined (non-JSON) bodies are left out: a subscriber never
    gets those from the exchange either. Ask for them with the event ``invalid``."""
    _check_target(to)
    if not query.events:
        query = replace(query, events=EVENTS)
    replay_id = uuid.uuid4().hex
    lease = await borrow(broker)
    connection = lease.connection
    copier: _Copier | None = None
    matched = 0
    found = scan(connection, exchange, query)
    error: BaseException | None = None
    left_out: LeftOut = Counter()
    try:
        partitions = await _target(connection, to)
        if not dry_run:
            channel = await bounded(
                lease.channel(publisher_confirms=True, on_return_raises=True),
                "opening a channel",
            )
            acting = Acting(exchange, Source.ARCHIVE_REPLAY, operator, via, _chosen(query))
            copier = _Copier(channel, to, on_progress, partitions, acting)
        async for webhook in found:
            if limit is not None and matched >= limit:
                break
            reason = audience.left_out(webhook) if audience is not None else None
            if reason is not None:
                left_out[(reason, _which(reason, webhook))] += 1
                continue
            matched += 1
            if copier is None:
                on_progress(matched, None)
                continue
            if pacer is not None:
                if pacer.due_in() > 0:
                    # It waits anyway: settle the copies sent, so the progress is current
                    # and nothing waits unconfirmed through a long pause.
                    await copier.finish()
                await pacer.wait()
            now = datetime.now(UTC).timestamp()
            await copier.copy(webhook, replay_copy(webhook, replay_id, now))
        if copier is not None:
            await copier.finish()
            await records_settled(copier.channel)
    except BaseException as exc:
        error = exc
        raise
    finally:
        await found.aclose()  # its stream consumer cancelled, even on a lent connection
        if copier is not None:
            copier.abandon()
            assert copier.acting is not None
            record = copier.acting.audit(Action.ARCHIVE_REPLAY, to, copier.sent, _stopped(error))
            await audit_on(lease.connection, exchange, record)
        await lease.release()
    return ReplayResult(replay_id, matched, copier.sent if copier is not None else 0, left_out)


def _chosen(query: ArchiveQuery) -> str:
    """What an archive replay's audit record says the operator chose."""
    events = ",".join(query.events) if set(query.events) != set(EVENTS) else "all events"
    order = query.order_id or query.order_number or query.message_id
    return (
        f"received {rfc3339(query.since.timestamp())} to {rfc3339(query.until.timestamp())}, "
        f"{events}" + (f", order {order}" if order else "")
    )


def _stopped(error: BaseException | None) -> str | None:
    """Why a replay stopped, for its audit record (``None``: it finished)."""
    if error is None:
        return None
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return str(error) or type(error).__name__


def _which(reason: Reason, webhook: ArchivedWebhook) -> str:
    """The event, client or warehouse id that made ``reason``."""
    if reason is Reason.EVENT:
        return webhook.event
    if reason in (Reason.CLIENT, Reason.WAREHOUSE):
        name = HEADER_CLIENT_ID if reason is Reason.CLIENT else HEADER_WAREHOUSE_ID
        return header_text(webhook.headers.get(name)) or "none"
    return ""
