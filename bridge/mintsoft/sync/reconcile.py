"""Reconcile: publish each despatched, cancelled, delivered or split event that Mintsoft
shows as older than ``BRIDGE_SYNC_GRACE`` but whose webhook the archive does not hold.

The message is what the webhook would have been: the body from the API in the webhook's
shape (``GET /api/Order/{id}`` for despatched and cancelled, the tracking event list for
delivered, ``GET /api/Order/{id}/Splits`` for split), the contract's properties and
headers, plus ``x-source: reconcile``, and a message id that depends only on the event
(:func:`~bridge.mintsoft.sync.scan.recovery_id`), so recovering it twice changes nothing
downstream. An event is marked ``recovered`` only
after the broker confirmed it; a broker that fails stops the step and leaves the rest
pending for the next pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bridge.amqp.publisher import Publisher, PublishFailed
from bridge.core import metrics
from bridge.core.contract import HEADER_SOURCE, Envelope, webhook_envelope
from bridge.core.settings import Settings
from bridge.errors import CommandError
from bridge.mintsoft.sync.api import SyncApi
from bridge.mintsoft.sync.archive import SeenEvents
from bridge.mintsoft.sync.enrol import mintsoft_away
from bridge.mintsoft.sync.state import (
    ENROLLED_STATES,
    EventState,
    OrderState,
    PendingEvent,
    SyncState,
)

log = logging.getLogger("bridge.mintsoft.sync")

SOURCE = "reconcile"
ARCHIVE_MARGIN = timedelta(hours=1)
"""How long before an event the archive is searched for its webhook (Mintsoft's clock and
ours may disagree a little; a webhook is never sent before its event)."""


@dataclass
class ReconcileResult:
    recovered: dict[str, int] = field(default_factory=dict)
    arrived: int = 0
    skipped: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def total_recovered(self) -> int:
        return sum(self.recovered.values())


def envelope(event: PendingEvent, body: bytes, now: float) -> Envelope:
    """The recovered webhook as the receiver would have published it (the contract's
    properties and headers, taken from the body), marked reconcile, with its recovery id."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    received = webhook_envelope(event.event, body, document, f"reconcile-{event.message_id}", now)
    headers = {**received.headers, HEADER_SOURCE: SOURCE}
    return replace(received, message_id=event.message_id, headers=headers)


async def _body(api: SyncApi, event: PendingEvent) -> bytes | None:
    """The webhook's body: kept from the scan (delivered), the order (despatched,
    cancelled), or its splits (``None`` when it has none)."""
    if event.body is not None:
        return event.body
    if event.event == "split":
        splits = await api.splits(event.order_id)
        return orjson.dumps(splits) if splits else None
    return await api.order(event.order_id)


def _in_scope(mode: str, order_state: OrderState | None) -> bool | None:
    """True: reconcile it; False: never (skip); None: not yet (its enrolment is pending)."""
    if mode == "all":
        return True
    if order_state in ENROLLED_STATES:
        return True
    if order_state == OrderState.PENDING:
        return None
    return False


async def reconcile(
    settings: Settings,
    api: SyncApi,
    state: SyncState,
    publisher: Publisher,
    seen: SeenEvents,
    on_done: Callable[[bool], None] = lambda ok: None,
    on_total: Callable[[int], None] = lambda n: None,
) -> ReconcileResult:
    result = ReconcileResult()
    if settings.sync_reconcile == "off":
        return result
    now = time.time()
    due = state.events_due(now - settings.sync_grace)
    work: list[PendingEvent] = []
    for event in due:
        verdict = _in_scope(settings.sync_reconcile, state.order_state(event.order_id))
        if verdict is None:
            result.waiting += 1
        elif not verdict:
            state.event_done(event.message_id, EventState.SKIPPED)
            result.skipped += 1
        else:
            work.append(event)
    on_total(len(work))
    if not work:
        return result
    since = datetime.fromtimestamp(min(e.happened_at for e in work), UTC) - ARCHIVE_MARGIN
    arrived = await seen(since, datetime.now(UTC) + timedelta(minutes=1))
    for event in work:
        if (event.event, event.order_id) in arrived:
            state.event_done(event.message_id, EventState.ARRIVED)
            result.arrived += 1
            on_done(True)
            continue
        try:
            body = await _body(api, event)
        except CommandError as exc:
            result.errors.append(f"order {event.order_id} ({event.event}): {exc}")
            on_done(False)
            if mintsoft_away(exc):
                break
            continue
        if body is None:  # several parts, but Mintsoft knows no split of this order
            state.event_done(event.message_id, EventState.SKIPPED)
            result.skipped += 1
            on_done(True)
            continue
        try:
            await publisher.publish(envelope(event, body, time.time()))
        except PublishFailed as exc:
            # The broker is away: nothing more can be recovered now; all stays pending.
            result.errors.append(f"publishing the recovered {event.event} webhook failed: {exc}")
            on_done(False)
            break
        state.event_done(event.message_id, EventState.RECOVERED)  # only after the confirm
        metrics.SYNC_RECOVERED.labels(event.event).inc()
        result.recovered[event.event] = result.recovered.get(event.event, 0) + 1
        log.info(
            "recovered a %s webhook Mintsoft did not deliver (order %s)",
            event.event,
            event.order_id,
        )
        on_done(True)
    return result
