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

Fails with :class:`SettingsError` for a target that is not a subscriber's queue name, and
:class:`CommandError` for a missing queue, a refused publish or a broker that stops
answering.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic

from bridge.amqp.connection import close_quietly, connect_once
from bridge.amqp.subscriber_target import partitions_exchange, route
from bridge.archive.end import bounded
from bridge.archive.reader import ArchivedWebhook, ArchiveQuery, copy_properties, scan
from bridge.core.contract import EVENTS, HEADER_REPLAY_ID, HEADER_REPLAYED_AT, rfc3339
from bridge.core.settings import SettingsError
from bridge.errors import CommandError

WINDOW = 256
"""Copies in flight (published, not yet confirmed) at most."""

Progress = Callable[[int, int | None], None]
"""Called with (copies confirmed so far, total when known)."""

_NOT_A_SUBSCRIBER = re.compile(r"\.(archive|unrouted|invalid|dlq|retry\.\d+)$")


@dataclass(frozen=True)
class ReplayResult:
    replay_id: str
    matched: int
    sent: int  # == matched unless dry_run (then 0)


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
        self, channel: AbstractChannel, to: str, progress: Progress, exchange: str | None
    ) -> None:
        self.channel = channel
        self.to = to
        self.exchange, self.routing_key = route(to, exchange)
        self.progress = progress
        self.pending: deque[asyncio.Future[object]] = deque()
        self.sent = 0

    async def copy(self, webhook: ArchivedWebhook, properties: Basic.Properties) -> None:
        publish = self.channel.basic_publish(
            webhook.body,
            exchange=self.exchange,
            routing_key=self.routing_key,
            mandatory=True,
            properties=properties,
        )
        self.pending.append(asyncio.ensure_future(publish))
        if len(self.pending) >= WINDOW:
            await self._settle_oldest()

    async def finish(self) -> None:
        while self.pending:
            await self._settle_oldest()

    def abandon(self) -> None:
        for future in self.pending:
            future.cancel()

    async def _settle_oldest(self) -> None:
        future = self.pending.popleft()
        try:
            confirm = await bounded(future, "a publish confirm")
        except aiormq.exceptions.PublishError:
            raise CommandError(
                f"the broker returned a copy: queue {self.to} was deleted during the replay; "
                f"{self.sent} copies were confirmed, run it again"
            ) from None
        except aiormq.exceptions.DeliveryError:
            confirm = None
        if not isinstance(confirm, Basic.Ack):
            raise CommandError(
                f"the broker refused a copy (queue {self.to} full, or a disk alarm); "
                f"{self.sent} copies were confirmed: fix the cause and run it again"
            )
        self.sent += 1
        self.progress(self.sent, None)


async def replay(
    amqp_urls: Sequence[str],
    exchange: str,
    query: ArchiveQuery,
    to: str,
    *,
    dry_run: bool = False,
    on_progress: Progress = _no_progress,
    limit: int | None = None,
) -> ReplayResult:
    """Copy each webhook matching ``query`` into queue ``to``; with ``dry_run``, only count;
    with ``limit``, at most that many (the number an operator confirmed).

    Without an event filter, quarantined (non-JSON) bodies are left out: a subscriber never
    gets those from the exchange either. Ask for them with the event ``invalid``."""
    _check_target(to)
    if not query.events:
        query = replace(query, events=EVENTS)
    replay_id = uuid.uuid4().hex
    connection = await connect_once(amqp_urls)
    copier: _Copier | None = None
    matched = 0
    try:
        partitions = await _target(connection, to)
        if not dry_run:
            channel = await bounded(
                connection.channel(publisher_confirms=True, on_return_raises=True),
                "opening a channel",
            )
            copier = _Copier(channel, to, on_progress, partitions)
        async for webhook in scan(connection, exchange, query):
            if limit is not None and matched >= limit:
                break
            matched += 1
            if copier is None:
                on_progress(matched, None)
                continue
            now = datetime.now(UTC).timestamp()
            await copier.copy(webhook, replay_copy(webhook, replay_id, now))
        if copier is not None:
            await copier.finish()
    finally:
        if copier is not None:
            copier.abandon()
        await close_quietly(connection)
    return ReplayResult(replay_id, matched, copier.sent if copier is not None else 0)
