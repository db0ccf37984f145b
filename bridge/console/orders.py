"""``/orders?q=<order id | order number | message id>``: every webhook for it (time, event,
size, source), each openable to its headers and pretty-printed body.

With a ledger (``BRIDGE_LEDGER_URL``) the webhooks come from it, each with a row per
subscriber: its state now and every attempt (time, outcome, status, answer or error,
duration), in milliseconds whatever the archive's size. A ledger that cannot be read is
said so on the page (never shown as "nothing found").

Without one, the page scans the archive over a window with
:func:`bridge.archive.reader.find` (``read_only``: it writes nothing into the stream;
slower as the archive grows, and the page says so) and each subscriber's DLQ with
:func:`bridge.console.dead_letters.snapshot_of` (nothing acked). Without the archive it
still shows the dead letters and says why; a DLQ the broker did not let it read is named as
"could not look", never counted as holding nothing.

A lookup that finds nothing says where it looked: with the ledger, what the ledger holds
(its oldest and newest webhook, how far it has indexed the archive); with an archive scan,
how many webhooks it read and the window ("searched 4,160 webhooks received from X to Y").
While a lookup runs, the form shows "Searching…" (``static/console.js``). Where webhooks
were found, "Replay to..." posts the order (or the message id looked up) and a window around
its webhooks to ``/replay``'s dry run; a webhook's page does the same for that one webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from bridge.amqp.topology import archive_name
from bridge.console.dead_letters import snapshot_of
from bridge.console.looked import Looked
from bridge.console.replay_plan import stamp
from bridge.console.sources import archive_available
from bridge.console.state import Console, console_of
from bridge.console.views import (
    DeadLetter,
    format_time,
    json_text,
    pretty_body,
    properties_shown,
    safe_headers,
)
from bridge.core.settings import SettingsError
from bridge.errors import CommandError

MAX_RESULTS = 500
DEFAULT_SINCE = "7d"
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
"""Stream times are Unix seconds: nothing the archive holds is older."""
_MESSAGE_ID = re.compile(r"^[0-9a-f]{32}$")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/orders", lookup)
    app.router.add_get("/orders/webhooks/{offset}", webhook)


def window(since: str, until: str) -> tuple[datetime, datetime]:
    """The lookup window from the form (RFC 3339 or "7d"-style ago); SettingsError (a 400
    naming the value) when unreadable or empty."""
    from bridge.archive.window import parse_time

    now = datetime.now(UTC)
    start = parse_time(since or DEFAULT_SINCE, now)
    end = parse_time(until, now) if until else now + timedelta(seconds=1)
    if start >= end:
        raise SettingsError(
            f"The window is empty: since ({start:%Y-%m-%d %H:%M:%S}) is not before until "
            f"({end:%Y-%m-%d %H:%M:%S}); give an earlier since or a later until."
        )
    return start, end


def _webhook_address(request: web.Request) -> tuple[int, datetime, datetime]:
    """The stream offset a webhook link carries and a 2-second window around its receive
    time; 400 when unusable (not a number, no time, out of the archive's range)."""
    try:
        offset = int(request.match_info["offset"])
        at = datetime.fromisoformat(request.query.get("at", ""))
        at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
        since, until = at - timedelta(seconds=1), at + timedelta(seconds=1)
    except (ValueError, OverflowError):
        offset, since = -1, EARLIEST
    if not 0 <= offset < 2**63 or since < EARLIEST:
        raise web.HTTPBadRequest(text="Open a webhook from an order's list.")
    return offset, since, until


def replay_scope(q: str, found: list[tuple[str | None, datetime | None]]) -> dict[str, str] | None:
    """What "Replay to..." on an order's page posts to ``/replay``: the message id looked up,
    or the one order id of the webhooks ``found`` ((order id, received at) each), and a window
    around them; ``None`` when there is nothing to replay or more than one order."""
    times = [at for _, at in found if at is not None]
    if not times:
        return None
    scope = {
        "since": stamp(min(times) - timedelta(seconds=1)),
        "until": stamp(max(times) + timedelta(seconds=1)),
        "order": "",
        "message": "",
    }
    if _MESSAGE_ID.match(q):
        return {**scope, "message": q}
    orders = {order for order, _ in found if order}
    if len(orders) != 1:
        return None
    return {**scope, "order": orders.pop()}


async def _archived(
    console: Console, q: str, since: datetime, until: datetime
) -> tuple[list[Any], int]:
    """The webhooks for ``q`` in the window, and how many webhooks of the window were read."""
    from bridge.archive.reader import ArchiveQuery, Seen, find

    if _MESSAGE_ID.match(q):
        queries = [ArchiveQuery(since=since, until=until, message_id=q)]
    else:
        queries = [
            ArchiveQuery(since=since, until=until, order_id=q),
            ArchiveQuery(since=since, until=until, order_number=q),
        ]
    found: dict[int, Any] = {}
    read = 0
    for query in queries:
        seen = Seen()
        hooks = find(console.broker, console.exchange, query, read_only=True, seen=seen)
        async with contextlib.aclosing(hooks):
            async for hook in hooks:
                found.setdefault(hook.offset, hook)
                if len(found) >= MAX_RESULTS:
                    break
        read = max(read, seen.in_window)  # each query reads the same window
    return [found[offset] for offset in sorted(found)], read


async def dead_for(console: Console, q: str) -> list[tuple[str, Looked[list[DeadLetter]]]]:
    """Per subscriber, its dead letters about ``q`` or why its DLQ could not be read."""

    async def one(name: str) -> tuple[str, Looked[list[DeadLetter]]]:
        looked = await snapshot_of(console, name)
        if looked.rows is None:
            return name, Looked(reason=looked.reason)
        return name, Looked.saw([d for d in looked.rows.letters if d.about(q)])

    return list(await asyncio.gather(*(one(sub.name) for sub in console.subscribers)))


@aiohttp_jinja2.template("orders.html")
async def lookup(request: web.Request) -> dict[str, Any]:
    console = console_of(request)
    q = request.query.get("q", "").strip()
    since = request.query.get("since", DEFAULT_SINCE).strip()
    until = request.query.get("until", "").strip()
    context: dict[str, Any] = {
        "q": q,
        "since": since,
        "until": until,
        "webhooks": [],
        "dead": [],
        "archive_note": None,
        "searched": bool(q),
        "format_time": format_time,
        "ledger": console.ledger is not None,
        "trace": None,
        "ledger_note": None,
        "coverage": None,
        "searched_count": None,
        "searched_window": None,
        "replay_scope": None,
    }
    if not q:
        return context
    if console.ledger is not None:
        try:
            trace = context["trace"] = await console.ledger.trace(q)
            if not trace.webhooks:
                context["coverage"] = await console.ledger.coverage(archive_name(console.exchange))
        except CommandError as exc:
            context["ledger_note"] = str(exc)
            return context
        found = [(w.order_id, w.received_at) for w in trace.webhooks]
        context["replay_scope"] = replay_scope(q, found)
        return context
    if not archive_available():
        context["archive_note"] = "This build has no archive: only dead letters are shown."
    else:
        start, end = window(since, until)
        context["searched_window"] = (start, min(end, datetime.now(UTC)))
        try:
            context["webhooks"], context["searched_count"] = await _archived(console, q, start, end)
        except CommandError as exc:
            context["archive_note"] = str(exc)
        found = [(h.order_id, h.received_at) for h in context["webhooks"]]
        context["replay_scope"] = replay_scope(q, found)
    context["dead"] = await dead_for(console, q)
    return context


@aiohttp_jinja2.template("webhook.html")
async def webhook(request: web.Request) -> dict[str, Any]:
    from bridge.archive.reader import ArchiveQuery, find

    console = console_of(request)
    offset, since, until = _webhook_address(request)
    query = ArchiveQuery(since=since, until=until, message_id=request.query.get("id", ""))
    hooks = find(console.broker, console.exchange, query, read_only=True)
    async with contextlib.aclosing(hooks):
        hook = await anext((hook async for hook in hooks if hook.offset == offset), None)
    if hook is None:
        raise web.HTTPNotFound(text=f"The archive no longer holds webhook {offset} (expired?).")
    return {
        "hook": hook,
        "dead": await dead_for(console, hook.message_id),
        "q": request.query.get("q", ""),
        "body": pretty_body(hook.body),
        "headers": json_text(safe_headers(hook.headers, console.secrets)),
        "properties": json_text(properties_shown(hook.properties, console.secrets)),
        "format_time": format_time,
        "replay_scope": {
            "since": stamp(hook.received_at - timedelta(seconds=1)),
            "until": stamp(hook.received_at + timedelta(seconds=1)),
            "order": "",
            "message": hook.message_id,
        },
    }
