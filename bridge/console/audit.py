"""``/audit``: every change operators made, from the console or the command line (a pause, a
resume, a discard, a dead-letter replay, an archive replay): when, who, what, to which
subscriber, how many, newest first, a page at a time (``?before=<row>`` pages to older ones).

Read from the ledger (:mod:`bridge.ledger.audits`), which indexes the audit records
(:mod:`bridge.core.audit`) from ``<exchange>.deliveries``. A ledger that does not answer gives
"could not look", never an empty list; without a ledger (``BRIDGE_LEDGER_URL`` empty) the
page says nothing can be listed and where the changes still go (the console's log). A bad
``before`` is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from bridge.console.looked import look
from bridge.console.state import console_of
from bridge.console.views import format_time


def add_routes(app: web.Application) -> None:
    app.router.add_get("/audit", page)


def _before(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(
            text=f"before={raw[:40]!r} is not a row number: follow the page's Older link."
        )
    return int(raw)


@aiohttp_jinja2.template("audit.html")
async def page(request: web.Request) -> dict[str, Any]:
    console = console_of(request)
    before = _before(request.query.get("before"))
    context: dict[str, Any] = {
        "ledger": console.ledger is not None,
        "before": before,
        "format_time": format_time,
    }
    if console.ledger is None:
        return context | {"looked": None}
    return context | {"looked": await look(console.ledger.audit(before))}
