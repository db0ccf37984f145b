"""What arrived: the (event, order id) pairs of every webhook the archive holds in a window.

Reconcile asks only this one question, through :data:`SeenEvents`, so it can be answered by
the archive library (:func:`archive_seen`, the default) or, in tests, by any real-broker
stand-in. A recovered webhook is archived too, so it counts as arrived on the next pass.
Without the archive (``BRIDGE_ARCHIVE=false``) reconcile cannot know what arrived: it fails
with a :class:`CommandError` naming the two ways out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from bridge.archive.reader import ArchiveQuery, find
from bridge.core.contract import ORDER_EVENTS
from bridge.core.settings import Settings
from bridge.errors import CommandError

SeenEvents = Callable[[datetime, datetime], Awaitable[set[tuple[str, int]]]]
"""``seen(since, until)`` (aware UTC, until exclusive) -> {(event, order id)} the archive
holds for webhooks received in that window (those routed ``order.<event>`` only)."""


def archive_seen(settings: Settings) -> SeenEvents:
    """:data:`SeenEvents` read from the archive stream (contract section 7). Raises
    :class:`CommandError` when the archive is unavailable."""

    async def seen(since: datetime, until: datetime) -> set[tuple[str, int]]:
        query = ArchiveQuery(since=since, until=until, events=ORDER_EVENTS)
        found: set[tuple[str, int]] = set()
        async for webhook in find(settings.amqp_urls, settings.exchange, query):
            order = str(webhook.order_id or "")
            if webhook.routing_key.startswith("order.") and order.isdigit():
                found.add((str(webhook.event), int(order)))
        return found

    return seen


def archive_off() -> SeenEvents:
    """With the archive off, reconcile cannot tell which webhooks arrived."""

    async def seen(since: datetime, until: datetime) -> set[tuple[str, int]]:
        raise CommandError(
            "the archive is off (BRIDGE_ARCHIVE=false), so reconcile cannot tell which "
            "webhooks arrived: turn the archive on, or set BRIDGE_SYNC_RECONCILE=off"
        )

    return seen


def default_seen(settings: Settings) -> SeenEvents:
    """The archive's answer, or :func:`archive_off`'s refusal when it is turned off."""
    return archive_seen(settings) if settings.archive else archive_off()
