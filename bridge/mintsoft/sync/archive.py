"""What arrived: the (event, order id) pairs of every webhook the archive holds in a window.

Reconcile asks only this one question, through :data:`SeenEvents`, so it can be answered by
the archive library (:func:`archive_seen`, the default) or, in tests, by any real-broker
stand-in. A recovered webhook is archived too, so it counts as arrived on the next pass.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from bridge.core.contract import EVENTS
from bridge.core.settings import Settings
from bridge.errors import CommandError

SeenEvents = Callable[[datetime, datetime], Awaitable[set[tuple[str, int]]]]
"""``seen(since, until)`` (aware UTC, until exclusive) -> {(event, order id)} the archive
holds for webhooks received in that window (those routed ``order.<event>`` only)."""


def archive_seen(settings: Settings) -> SeenEvents:
    """:data:`SeenEvents` read from the archive stream with ``bridge.archive.reader.find``
    (contract section 7). Raises :class:`CommandError` when the archive is unavailable."""

    async def seen(since: datetime, until: datetime) -> set[tuple[str, int]]:
        # Imported by name so this module stands before bridge/archive is merged; once it
        # is, this line may become `from bridge.archive import reader` (then type-checked).
        reader: Any = importlib.import_module("bridge.archive.reader")
        query = reader.ArchiveQuery(since=since, until=until, events=EVENTS)
        found: set[tuple[str, int]] = set()
        async for webhook in reader.find(settings.amqp_urls, settings.exchange, query):
            order = str(webhook.order_id or "")
            if webhook.routing_key.startswith("order.") and order.isdigit():
                found.add((str(webhook.event), int(order)))
        return found

    return seen


def archive_missing() -> SeenEvents:
    """Used when ``bridge.archive`` is not installed: reconcile cannot know what arrived."""

    async def seen(since: datetime, until: datetime) -> set[tuple[str, int]]:
        raise CommandError(
            "the archive library (bridge.archive) is not available, so reconcile cannot tell "
            "which webhooks arrived: install a bridge with the archive, or set "
            "BRIDGE_SYNC_RECONCILE=off"
        )

    return seen


def default_seen(settings: Settings) -> SeenEvents:
    try:
        importlib.import_module("bridge.archive.reader")
    except ImportError:
        return archive_missing()
    return archive_seen(settings)
