"""``/subscribers/<name>/dead-letters``: a subscriber's dead letters, paged and filtered by
event and text; one opened with its body and headers; replay one, the selection or all;
discard one. Every change asks first (a confirmation saying how many), is a POST with the
CSRF token, and is logged with what was done (counts and message ids, never a body).

Reading takes the dead letters without acking them, so they stay in the DLQ. Replays use
:mod:`bridge.worker.dlq` and :mod:`bridge.worker.dlq_pick`: a copy is confirmed in the
subscriber's queue before its dead letter is acked, so a page closed mid-way loses nothing.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from bridge.console.auth import flash, take_notice
from bridge.console.state import console_of
from bridge.console.views import (
    DeadLetter,
    confirmed_count,
    dead_letter,
    json_text,
    pretty_body,
)
from bridge.core.contract import EVENTS
from bridge.worker.dlq import list_dead_letters, replay_dead_letters
from bridge.worker.dlq_pick import discard_picked, replay_picked

log = logging.getLogger("bridge.console")
SCAN_LIMIT = 2000
PAGE_SIZE = 50


def add_routes(app: web.Application) -> None:
    base = "/subscribers/{name}/dead-letters"
    app.router.add_get(base, listing)
    app.router.add_post(base + "/replay", replay)
    app.router.add_post(base + "/discard", discard)
    app.router.add_get(base + "/{message_id}", one)


async def read(request: web.Request, name: str) -> tuple[int, list[DeadLetter]]:
    """The DLQ's depth and up to ``SCAN_LIMIT`` of its dead letters, oldest first."""
    console = console_of(request)
    console.subscriber(name)
    found = await list_dead_letters(console.amqp_urls, name, SCAN_LIMIT)
    return found.depth, [dead_letter(got, console.secrets) for got in found.messages]


def _page_number(raw: str | None) -> int:
    try:
        return max(1, int(raw or "1"))
    except ValueError:
        return 1


@aiohttp_jinja2.template("dead_letters.html")
async def listing(request: web.Request) -> dict[str, Any]:
    name = request.match_info["name"]
    event = request.query.get("event", "")
    text = request.query.get("q", "").strip()
    depth, letters = await read(request, name)
    shown = [letter for letter in letters if letter.matches(event, text)]
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page = min(_page_number(request.query.get("page")), pages)
    return {
        "name": name,
        "depth": depth,
        "scanned": len(letters),
        "matching": len(shown),
        "letters": shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        "page": page,
        "pages": pages,
        "event": event,
        "q": text,
        "events": EVENTS,
        "notice": take_notice(request),
        "filtered": bool(event or text),
        "page_link": lambda n: "?" + urlencode({"event": event, "q": text, "page": n}),
    }


@aiohttp_jinja2.template("dead_letter.html")
async def one(request: web.Request) -> dict[str, Any]:
    name = request.match_info["name"]
    wanted = request.match_info["message_id"]
    _, letters = await read(request, name)
    for letter in letters:
        if letter.message_id == wanted:
            return {
                "name": name,
                "letter": letter,
                "body": pretty_body(letter.body),
                "headers": json_text(letter.headers),
                "properties": json_text(letter.properties),
            }
    raise web.HTTPNotFound(
        text=f"No dead letter {wanted} in {name}.dlq (replayed or discarded meanwhile?)."
    )


def _back(request: web.Request, name: str, notice: str) -> web.HTTPSeeOther:
    flash(request, notice)
    return web.HTTPSeeOther(f"/subscribers/{name}/dead-letters")


def _plural(n: int) -> str:
    return f"{n} dead letter{'' if n == 1 else 's'}"


async def replay(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    console = console_of(request)
    console.subscriber(name)
    form = await request.post()
    ids = [str(v) for v in form.getall("id", [])]
    every = form.get("all") == "1"
    event, text = str(form.get("event", "")), str(form.get("q", "")).strip()
    if not ids and not every:
        raise _back(request, name, "Nothing selected: tick the dead letters to replay.")
    if every and (event or text):
        # "All" under a filter means all that the filter shows, picked by id.
        _, letters = await read(request, name)
        ids = sorted({letter.message_id for letter in letters if letter.matches(event, text)})
        every = False
    if form.get("confirmed") != "1":
        depth = (await list_dead_letters(console.amqp_urls, name, 0)).depth
        count = depth if every else len(ids)
        return aiohttp_jinja2.render_template(
            "confirm.html",
            request,
            {
                "title": f"Replay {_plural(count)} to {name}?",
                "explain": "Each is copied back to the subscriber's queue (attempts reset) "
                "and leaves the DLQ once the broker confirmed the copy.",
                "action": f"/subscribers/{name}/dead-letters/replay",
                "fields": [("all", "1"), ("count", str(count))]
                if every
                else [("id", i) for i in ids],
                "count": count,
                "button": f"Replay {_plural(count)}",
                "back": f"/subscribers/{name}/dead-letters",
            },
        )
    if every:
        # The count the user confirmed bounds the replay: 0 (the DLQ was empty then) moves
        # nothing, never "no limit"; anything but a whole number is a bad request.
        count = confirmed_count(form.get("count"))
        moved = (await replay_dead_letters(console.amqp_urls, name, count))[0] if count else 0
        log.info("console: replayed %s of %s (all)", _plural(moved), name)
        raise _back(request, name, f"Replayed {_plural(moved)} to {name}.")
    picked = await replay_picked(console.amqp_urls, name, ids)
    log.info("console: replayed %s of %s (ids %s)", _plural(picked.done), name, ",".join(ids[:20]))
    gone = f"; {len(picked.missing)} no longer in the DLQ" if picked.missing else ""
    raise _back(request, name, f"Replayed {_plural(picked.done)} to {name}{gone}.")


async def discard(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    console = console_of(request)
    console.subscriber(name)
    form = await request.post()
    message_id = str(form.get("id", ""))
    if not message_id:
        raise _back(request, name, "Nothing to discard.")
    if form.get("confirmed") != "1":
        return aiohttp_jinja2.render_template(
            "confirm.html",
            request,
            {
                "title": f"Discard dead letter {message_id} of {name}?",
                "explain": "It is deleted from the DLQ for good; the archive keeps its "
                "webhook if the archive is on.",
                "action": f"/subscribers/{name}/dead-letters/discard",
                "fields": [("id", message_id)],
                "count": 1,
                "button": "Discard 1 dead letter",
                "back": f"/subscribers/{name}/dead-letters/{message_id}",
                "danger": True,
            },
        )
    picked = await discard_picked(console.amqp_urls, name, [message_id])
    log.info("console: discarded %s of %s (id %s)", _plural(picked.done), name, message_id)
    raise _back(request, name, f"Discarded {_plural(picked.done)} of {name}.")
