"""Enrolment: give each new order the connect action ``connect-actions`` would, unless its
connect actions already hold the bridge's URLs, and never over one that is not the
bridge's.

Per order: ``GET .../ConnectActions`` first, then at most one ``PUT``. An order whose
actions hold the bridge's URLs is ``already`` (or ``enrolled`` if our own PUT, made before a
crash, put them there). Any other existing action is a *conflict*: Mintsoft does not say
whether a PUT adds an action or replaces the one there, and replacing it would silently cut
off whatever that action feeds (another integration's URLs, a marketplace link). Conflicts
are counted, listed by ``sync status`` and left alone unless ``--take-over``. A failure is
recorded with the error and retried on a later pass (backing off), never dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bridge.core import metrics
from bridge.core.contract import EXTRA_CODES, ORDER_EVENTS
from bridge.core.settings import Settings
from bridge.errors import CommandError
from bridge.mintsoft.client import MintsoftError
from bridge.mintsoft.connect_actions import connect_action
from bridge.mintsoft.sync.api import SyncApi
from bridge.mintsoft.sync.state import OrderState, SyncState
from bridge.mintsoft.urls import webhook_url

log = logging.getLogger("bridge.mintsoft.sync")

URL_FIELDS = tuple(EXTRA_CODES[e] for e in ORDER_EVENTS)
RETRY_MAX = 3600.0
"""A failed order is tried again after one interval, then two, four... at most an hour."""


def _bare(url: str) -> str:
    """A URL without its query (the ``APIKEY``), lower-cased scheme and host."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def _host(url: str) -> str:
    """Where a URL points, for logs and ``sync status``: its host only (never a userinfo
    password or a query key)."""
    parts = urlsplit(url.strip())
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.hostname}{port}" if parts.hostname else "a URL that is not http(s)"


def bridge_urls(settings: Settings) -> set[str]:
    """The bridge's webhook URLs, without credentials: a rotated key still counts as ours."""
    assert settings.public_url is not None
    return {_bare(webhook_url(settings.public_url, event)) for event in ORDER_EVENTS}


def classify(actions: list[dict[str, Any]], ours: set[str]) -> tuple[str, str]:
    """``("already", "")``, ``("free", "")`` or ``("conflict", where it points)``."""
    holds_ours = False
    foreign: list[str] = []
    for action in actions:
        urls = [str(action[f]) for f in URL_FIELDS if isinstance(action.get(f), str) and action[f]]
        mine = [u for u in urls if _bare(u) in ours]
        if mine and len(mine) == len(urls):
            holds_ours = True
        elif urls:
            foreign += [_host(u) for u in urls if _bare(u) not in ours]
        else:
            foreign.append(f"a {action.get('Type') or 'typeless'} action without webhook URLs")
    if foreign:
        return "conflict", ", ".join(sorted(set(foreign)))[:300]
    if holds_ours:
        return "already", ""
    return "free", ""


def mintsoft_away(exc: Exception) -> bool:
    """Mintsoft kept throttling, failing or not answering (its retries are spent): trying
    the next order now would only spend another round of them."""
    if not isinstance(exc, MintsoftError):
        return False
    return exc.status is None or exc.status == 429 or exc.status >= 500


@dataclass
class EnrolResult:
    enrolled: int = 0
    already: int = 0
    conflicts: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


async def enrol_pending(
    settings: Settings,
    api: SyncApi,
    state: SyncState,
    take_over: bool = False,
    on_done: Callable[[bool], None] = lambda ok: None,
    on_total: Callable[[int], None] = lambda n: None,
) -> EnrolResult:
    """Enrol every order due; failures stay pending with a later ``next_try``."""
    body = connect_action(settings, ORDER_EVENTS, None)
    ours = bridge_urls(settings)
    result = EnrolResult()
    due = state.orders_to_enrol(time.time(), take_over)
    on_total(len(due))
    for order in due:
        try:
            actions = await api.connect_actions(order.order_id)
            verdict, detail = classify(actions, ours)
            if verdict == "already":
                done = OrderState.ENROLLED if order.put_at else OrderState.ALREADY
                state.order_done(order.order_id, done)
                result.already += 1
            elif verdict == "conflict" and not take_over:
                if order.state != OrderState.CONFLICT:
                    log.warning(
                        "order %s: its connect action points at %s; left alone "
                        "(sync --take-over would replace it)",
                        order.order_id,
                        detail,
                    )
                state.order_done(order.order_id, OrderState.CONFLICT, detail)
                result.conflicts += 1
            else:
                state.putting(order.order_id)
                await api.put_connect_action(
                    order.order_id, body | {"SourceOrderId": str(order.order_id)}
                )
                state.order_done(order.order_id, OrderState.ENROLLED)
                metrics.SYNC_ENROLLED.inc()
                result.enrolled += 1
        except CommandError as exc:
            retry_in = min(RETRY_MAX, settings.sync_interval * 2 ** min(order.attempts, 10))
            state.order_failed(order.order_id, str(exc), retry_in)
            result.failed += 1
            result.errors.append(f"order {order.order_id}: {exc}")
            on_done(False)
            if mintsoft_away(exc):
                break  # the rest waits for the next pass rather than for every retry
            continue
        on_done(True)
    metrics.SYNC_CONFLICTS.set(state.order_counts().get(OrderState.CONFLICT, 0))
    return result
