"""``/subscribers/<name>/dead-letters``: a subscriber's dead letters, oldest first in the
same order on every load and page, grouped by error with counts, filtered by event, error
and text; one opened with its body and headers; replay or discard one, the selection, or
all that match the filter. Every change asks first (a confirmation with the exact count,
naming orders and events), is a POST with the CSRF token, leaves a delivery record per
message (source ``console``, by the signed-in operator) and one audit record (what, how
many, by whom), and is logged (counts and message ids, never a body).

Reading takes a bounded snapshot (``SCAN_LIMIT``) without acking, so the dead letters stay
in the DLQ, and sorts it by failure time then message id (:func:`bridge.worker.dlq.
oldest_first`). One read or change of a subscriber's DLQ runs at a time in this console:
two readers taking turns at ``basic.get`` would each see part of the queue. A broker that
does not answer gives a page saying it could not look, never "no dead letters".
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from bridge.amqp.connection import Brokers
from bridge.amqp.deliveries import Acting
from bridge.console.auth import flash, operator_of, take_notice
from bridge.console.looked import Looked, look
from bridge.console.state import Console, console_of
from bridge.console.views import (
    DeadLetter,
    confirmed_count,
    dead_letter,
    json_text,
    pretty_body,
)
from bridge.core.audit import Via
from bridge.core.contract import EVENTS
from bridge.core.records import Source
from bridge.worker.dlq import list_dead_letters, replay_dead_letters
from bridge.worker.dlq_pick import Picked, discard_picked, replay_picked

log = logging.getLogger("bridge.console")
SCAN_LIMIT = 2000
PAGE_SIZE = 50
NAMED_IN_CONFIRM = 10
"""How many dead letters a confirmation names (order, event, id); the count is exact."""

PickAction = Callable[[Brokers, str, Collection[str], Acting | None], Awaitable[Picked]]
""":func:`replay_picked` or :func:`discard_picked`."""


def add_routes(app: web.Application) -> None:
    base = "/subscribers/{name}/dead-letters"
    app.router.add_get(base, listing)
    app.router.add_post(base + "/replay", replay)
    app.router.add_post(base + "/discard", discard)
    app.router.add_get(base + "/{message_id}", one)


@dataclass(frozen=True)
class Snapshot:
    """The DLQ's depth and up to ``SCAN_LIMIT`` of its dead letters, oldest first."""

    depth: int
    letters: list[DeadLetter]

    def matching(self, want: Filter) -> list[DeadLetter]:
        return [letter for letter in self.letters if want.keeps(letter)]

    def named(self, ids: list[str]) -> list[DeadLetter]:
        wanted = set(ids)
        return [letter for letter in self.letters if letter.message_id in wanted]


@dataclass(frozen=True)
class Filter:
    """What the page's filter keeps: an event, an exact error (a group), a text."""

    event: str = ""
    error: str = ""
    text: str = ""

    def keeps(self, letter: DeadLetter) -> bool:
        if self.error and letter.error != self.error:
            return False
        return letter.matches(self.event, self.text)

    @property
    def on(self) -> bool:
        return bool(self.event or self.error or self.text)

    def query(self, **more: Any) -> str:
        return "?" + urlencode({"event": self.event, "error": self.error, "q": self.text, **more})


def _filter(values: Any) -> Filter:
    return Filter(
        event=str(values.get("event", "")),
        error=str(values.get("error", "")),
        text=str(values.get("q", "")).strip(),
    )


def _lock(console: Console, name: str) -> asyncio.Lock:
    return console.dlq_locks.setdefault(name, asyncio.Lock())


async def _snapshot(console: Console, name: str) -> Snapshot:
    found = await list_dead_letters(console.broker, name, SCAN_LIMIT)
    return Snapshot(found.depth, [dead_letter(got, console.secrets) for got in found.messages])


async def snapshot_of(console: Console, name: str) -> Looked[Snapshot]:
    """A snapshot of ``name``'s DLQ, or why the broker could not be asked."""
    async with _lock(console, name):
        return await look(_snapshot(console, name))


async def read(request: web.Request, name: str) -> Looked[Snapshot]:
    console = console_of(request)
    console.subscriber(name)
    return await snapshot_of(console, name)


def _page_number(raw: str | None) -> int:
    try:
        return max(1, int(raw or "1"))
    except ValueError:
        return 1


def groups(letters: list[DeadLetter]) -> list[tuple[str, int]]:
    """Each error with how many dead letters carry it, the most frequent first (ties: the
    error seen first, so the order is as stable as the listing)."""
    counts = Counter(letter.error for letter in letters)
    first = {letter.error: i for i, letter in reversed(list(enumerate(letters)))}
    return sorted(counts.items(), key=lambda item: (-item[1], first[item[0]]))


@aiohttp_jinja2.template("dead_letters.html")
async def listing(request: web.Request) -> dict[str, Any]:
    name = request.match_info["name"]
    want = _filter(request.query)
    looked = await read(request, name)
    context: dict[str, Any] = {
        "name": name,
        "looked": looked,
        "event": want.event,
        "error": want.error,
        "q": want.text,
        "events": EVENTS,
        "notice": take_notice(request),
        "filtered": want.on,
    }
    if looked.rows is None:
        return context
    snapshot = looked.rows
    unerrored = Filter(event=want.event, text=want.text)
    shown = snapshot.matching(want)
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page = min(_page_number(request.query.get("page")), pages)
    return context | {
        "depth": snapshot.depth,
        "scanned": len(snapshot.letters),
        "matching": len(shown),
        "groups": groups(snapshot.matching(unerrored)),
        "group_link": lambda error: replace(unerrored, error=error).query(),
        "letters": shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        "page": page,
        "pages": pages,
        "page_link": lambda n: want.query(page=n),
    }


@aiohttp_jinja2.template("dead_letter.html")
async def one(request: web.Request) -> dict[str, Any]:
    name = request.match_info["name"]
    wanted = request.match_info["message_id"]
    looked = await read(request, name)
    if looked.rows is None:
        return {"name": name, "message_id": wanted, "looked": looked}
    for letter in looked.rows.letters:
        if letter.message_id == wanted:
            return {
                "name": name,
                "message_id": wanted,
                "looked": looked,
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


def _acting(request: web.Request, form: Any, every: bool) -> Acting:
    """Who acts (the signed-in operator; ``None`` with the shared password) and what they
    chose, for the delivery records and the change's audit record."""
    if every:
        scope = "all"
    elif form.get("all") == "1":
        scope = "all matching a filter"
    else:
        scope = "selected"
    console = console_of(request)
    return Acting(console.exchange, Source.CONSOLE, operator_of(request), Via.CONSOLE, scope)


async def _chosen(request: web.Request, name: str, form: Any) -> tuple[list[str], bool]:
    """The ids a form picks, and whether it means the whole DLQ (``all`` and no filter).
    "All" under a filter means all the filter shows, picked by id from a snapshot."""
    ids = [str(v) for v in form.getall("id", [])]
    want = _filter(form)
    if form.get("all") != "1":
        return ids, False
    if not want.on:
        return [], True
    snapshot = await _seen(request, name)
    return sorted({letter.message_id for letter in snapshot.matching(want)}), False


async def _seen(request: web.Request, name: str) -> Snapshot:
    looked = await read(request, name)
    if looked.rows is None:
        raise web.HTTPServiceUnavailable(
            text=f"Could not look at {name}.dlq, so nothing was changed: {looked.reason}"
        )
    return looked.rows


async def _confirm(
    request: web.Request, name: str, ids: list[str], context: dict[str, Any]
) -> web.StreamResponse:
    """The confirmation page, naming (up to ``NAMED_IN_CONFIRM``) the orders and events; if
    the DLQ cannot be read to name them, it says so (the count stays exact: it is the ids')."""
    named: list[DeadLetter] = []
    unnamed = None
    if ids:
        looked = await read(request, name)
        if looked.rows is None:
            unnamed = looked.reason
        else:
            named = looked.rows.named(ids[:NAMED_IN_CONFIRM])
    return aiohttp_jinja2.render_template(
        "confirm.html",
        request,
        {
            "back": f"/subscribers/{name}/dead-letters",
            "named": named,
            "more": len(ids) - len(named),
            "unnamed": unnamed,
        }
        | context,
    )


@dataclass(frozen=True)
class _Posted:
    """A replay or discard form posted for subscriber ``name``: the dead letters it picks
    (``every``: the whole DLQ, see :func:`_chosen`)."""

    name: str
    console: Console
    form: Any
    ids: list[str]
    every: bool

    def acting(self, request: web.Request) -> Acting:
        return _acting(request, self.form, self.every)


async def _posted(request: web.Request) -> _Posted:
    name = request.match_info["name"]
    console = console_of(request)
    console.subscriber(name)
    form = await request.post()
    ids, every = await _chosen(request, name, form)
    return _Posted(name, console, form, ids, every)


async def _on_picked(
    request: web.Request, posted: _Posted, act: PickAction, done: str, whom: str
) -> web.HTTPSeeOther:
    """Run ``act`` on the picked ids (the subscriber's DLQ locked), log it, and go back
    saying ``done`` (a verb in the past) how many ``whom``, and how many were gone."""
    name, ids = posted.name, posted.ids
    async with _lock(posted.console, name):
        picked = await act(posted.console.broker, name, ids, posted.acting(request))
    log.info(
        "console: %s %s of %s (ids %s)",
        done.lower(),
        _plural(picked.done),
        name,
        ",".join(ids[:20]),
    )
    gone = f"; {len(picked.missing)} no longer in the DLQ" if picked.missing else ""
    return _back(request, name, f"{done} {_plural(picked.done)} {whom}{gone}.")


async def replay(request: web.Request) -> web.StreamResponse:
    posted = await _posted(request)
    name, ids, every = posted.name, posted.ids, posted.every
    if not ids and not every:
        raise _back(request, name, "Nothing selected: tick the dead letters to replay.")
    if posted.form.get("confirmed") != "1":
        count = len(ids)
        if every:
            count = (await _seen(request, name)).depth
        return await _confirm(
            request,
            name,
            ids,
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
            },
        )
    if every:
        # The count the user confirmed bounds the replay: 0 (the DLQ was empty then) moves
        # nothing, never "no limit"; anything but a whole number is a bad request.
        count = confirmed_count(posted.form.get("count"))
        moved = 0
        if count:
            async with _lock(posted.console, name):
                moved = (
                    await replay_dead_letters(
                        posted.console.broker, name, count, posted.acting(request)
                    )
                )[0]
        log.info("console: replayed %s of %s (all)", _plural(moved), name)
        raise _back(request, name, f"Replayed {_plural(moved)} to {name}.")
    raise await _on_picked(request, posted, replay_picked, "Replayed", f"to {name}")


async def discard(request: web.Request) -> web.StreamResponse:
    posted = await _posted(request)
    name, ids = posted.name, posted.ids
    if posted.every:
        # "Discard all" deletes what the operator saw and counted, picked by id: never
        # what arrived after the confirmation.
        ids = [letter.message_id for letter in (await _seen(request, name)).letters]
        posted = replace(posted, ids=ids)
    if not ids:
        raise _back(request, name, "Nothing selected: tick the dead letters to discard.")
    if posted.form.get("confirmed") != "1":
        count = len(ids)
        return await _confirm(
            request,
            name,
            ids,
            {
                "title": f"Discard {_plural(count)} of {name}?",
                "explain": "They are deleted from the DLQ for good; the archive keeps their "
                "webhooks if the archive is on.",
                "action": f"/subscribers/{name}/dead-letters/discard",
                "fields": [("id", i) for i in ids],
                "count": count,
                "button": f"Discard {_plural(count)}",
                "danger": True,
            },
        )
    raise await _on_picked(request, posted, discard_picked, "Discarded", f"of {name}")
