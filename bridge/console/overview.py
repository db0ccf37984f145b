"""``/``: per subscriber what it is doing and why in one line, its last delivery's age and
its delivered and failed attempts in the last hour (from the ledger, when there is one), its
events, queue depth and consumers, what waits in each retry step and in its DLQ; the
archive's size and span; the sync's lag and recovered count. The
figures live in a fragment (``/overview/live``) that the page refreshes every few seconds
with htmx, without a reload. A broker that cannot be reached is shown on the page as
"could not look" against every subscriber of the subscribers file: the page never says
"no subscribers" or "0" for what it could not read; a ledger that did not answer is said
so on each card, beside what the broker did say.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from bridge.console.looked import COULD_NOT_LOOK, Looked, look
from bridge.console.queues import subscriber_stats
from bridge.console.shown import Shown
from bridge.console.sources import ledger_figures
from bridge.console.state import console_of
from bridge.console.subscriber_state import state_of
from bridge.console.views import format_time, safe_headers, span
from bridge.mintsoft.sync.status import sync_overview

REFRESH_SECONDS = 5


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get("/overview/live", live)


async def _figures(request: web.Request) -> dict[str, Any]:
    console = console_of(request)
    names = [sub.name for sub in console.subscribers]
    stats, ledger = await asyncio.gather(
        look(subscriber_stats(console.broker, console.subscribers)),
        ledger_figures(console.ledger, names, console.exchange),
    )
    delivered = ledger.rows if ledger is not None and ledger.rows is not None else {}
    archive: Looked[Any] = Looked(reason=stats.reason)
    if stats.looked:
        try:
            # Cached (one per console): each read writes end markers into the stream.
            archive = Looked.saw(
                await console.archive_cache.get(
                    console.broker, console.exchange, console.archive_retention
                )
            )
        except COULD_NOT_LOOK as exc:
            archive = Looked.could_not(exc)
    sync = sync_overview(console.sync_state_path)
    return {
        "stats": stats,
        "state_of": state_of,
        "ledger": ledger,
        "figures": delivered,
        "shown": Shown(console.secrets, datetime.now(UTC)),
        "subscribers": console.subscribers,
        "archive": archive,
        "sync": sync,
        "sync_facts": safe_headers(sync.facts, console.secrets) if sync else {},
        "exchange": console.exchange,
        "format_time": format_time,
        "span": span,
        "refresh": REFRESH_SECONDS,
    }


@aiohttp_jinja2.template("overview.html")
async def page(request: web.Request) -> dict[str, Any]:
    return await _figures(request)


@aiohttp_jinja2.template("_overview_live.html")
async def live(request: web.Request) -> dict[str, Any]:
    return await _figures(request)
