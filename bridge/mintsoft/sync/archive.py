"""What arrived: the (event, order id) pairs of every webhook the archive holds in a window.

Reconcile asks only this one question, through :data:`SeenEvents`, so it can be answered by
the ledger (:func:`ledger_seen`, when ``BRIDGE_LEDGER_URL`` is set: an indexed query, no
archive scan per pass), the archive library (:func:`archive_seen`) or, in tests, by any
real-broker stand-in. The ledger is trusted only when its indexer is current through the
window's end; otherwise (stopped, behind, or its database away) that pass asks the archive,
so a lagging ledger never makes sync publish webhooks that did arrive. A recovered webhook
is archived too, so it counts as arrived on the next pass.
Without the archive (``BRIDGE_ARCHIVE=false``) reconcile cannot know what arrived: it fails
with a :class:`CommandError` naming the two ways out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from bridge.amqp.topology import archive_name
from bridge.archive.reader import ArchiveQuery, find
from bridge.core.contract import ORDER_EVENTS
from bridge.core.settings import Settings
from bridge.errors import CommandError
from bridge.ledger.queries import LedgerReader

log = logging.getLogger("bridge.mintsoft.sync")

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


def ledger_seen(settings: Settings, url: str, fallback: SeenEvents) -> SeenEvents:
    """:data:`SeenEvents` from the ledger at ``url``; ``fallback`` (the archive) for a pass
    the ledger cannot answer."""
    reader = LedgerReader(url)
    archive = archive_name(settings.exchange)

    async def seen(since: datetime, until: datetime) -> set[tuple[str, int]]:
        try:
            found = await reader.arrived(archive, since, until)
        except CommandError as exc:
            log.warning("%s; asking the archive instead", exc)
            return await fallback(since, until)
        if found is None:
            log.info("the ledger is not yet current through %s: asking the archive", until)
            return await fallback(since, until)
        return {
            (event, int(order))
            for event, order in found
            if event in ORDER_EVENTS and order.isdigit()
        }

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
    """The ledger's answer (the archive's when it cannot give one), the archive's without a
    ledger, or :func:`archive_off`'s refusal when the archive is turned off."""
    if not settings.archive:
        return archive_off()
    if settings.ledger_url:
        return ledger_seen(settings, settings.ledger_url, archive_seen(settings))
    return archive_seen(settings)
