"""``/replay``: replay webhooks from the archive into one subscriber's queue.

The form (window, events, order, target subscriber) first runs a dry run and shows how many
webhooks match; only the confirmation sends them, as a background job (:mod:`jobs`) whose
progress the page polls. The copies are made by :func:`bridge.archive.replay.replay`: each
confirmed, never re-archived, sent to the subscriber's queue only. Logged with the window,
events, target and counts (the order filter is not logged).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiMapping

from bridge.console.jobs import Job
from bridge.console.sources import archive_available
from bridge.console.state import Console, console_of
from bridge.core.contract import EVENTS
from bridge.core.settings import SettingsError

log = logging.getLogger("bridge.console")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/replay", form)
    app.router.add_post("/replay", submit)
    app.router.add_get("/replay/jobs/{job}", job_page)
    app.router.add_get("/replay/jobs/{job}/progress", job_progress)


def _values(source: MultiMapping[Any]) -> dict[str, Any]:
    return {
        "since": str(source.get("since", "1h")).strip(),
        "until": str(source.get("until", "")).strip(),
        "events": [str(e) for e in source.getall("event", []) if str(e) in EVENTS],
        "order": str(source.get("order", "")).strip(),
        "to": str(source.get("to", "")).strip(),
    }


def _query(values: dict[str, Any]) -> Any:
    from bridge.archive.reader import ArchiveQuery
    from bridge.console.orders import window

    since, until = window(values["since"], values["until"])
    order = values["order"] or None
    return ArchiveQuery(since=since, until=until, order_id=order, events=tuple(values["events"]))


def _context(console: Console, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "values": values,
        "events": EVENTS,
        "targets": [sub.name for sub in console.subscribers],
        "available": archive_available(),
        "count": None,
        "error": None,
        **extra,
    }


async def form(request: web.Request) -> web.Response:
    console = console_of(request)
    values = _values(request.query)
    return aiohttp_jinja2.render_template("replay.html", request, _context(console, values))


async def submit(request: web.Request) -> web.StreamResponse:
    from bridge.archive.replay import replay

    console = console_of(request)
    data = await request.post()
    values = _values(data)
    try:
        if values["to"] not in {sub.name for sub in console.subscribers}:
            raise SettingsError("Choose the subscriber to send to.")
        query = _query(values)
    except SettingsError as exc:
        context = _context(console, values, error=str(exc))
        return aiohttp_jinja2.render_template("replay.html", request, context, status=400)
    if data.get("confirmed") != "1":
        dry = await replay(console.amqp_urls, console.exchange, query, values["to"], dry_run=True)
        context = _context(console, values, count=dry.matched)
        return aiohttp_jinja2.render_template("replay.html", request, context)
    expected = int(str(data.get("count", "0")) or 0)

    async def work(job: Job) -> str:
        job.total = expected or None
        result = await replay(
            console.amqp_urls, console.exchange, query, values["to"], on_progress=job.progress
        )
        job.progress(result.sent, result.matched)
        log.info(
            "console: replayed %d of %d archived webhooks to %s (window %s..%s, events %s, "
            "replay id %s)",
            result.sent,
            result.matched,
            values["to"],
            values["since"],
            values["until"] or "now",
            ",".join(values["events"]) or "all",
            result.replay_id,
        )
        return f"Sent {result.sent} of {result.matched} webhooks to {values['to']}."

    job = console.jobs.start(f"archive replay to {values['to']}", work)
    raise web.HTTPSeeOther(f"/replay/jobs/{job.id}")


def _job(request: web.Request) -> Job:
    job = console_of(request).jobs.get(request.match_info["job"])
    if job is None:
        raise web.HTTPNotFound(text="No such replay (the console was restarted since?).")
    return job


@aiohttp_jinja2.template("replay_job.html")
async def job_page(request: web.Request) -> dict[str, Any]:
    return {"job": _job(request)}


@aiohttp_jinja2.template("_progress.html")
async def job_progress(request: web.Request) -> dict[str, Any]:
    return {"job": _job(request)}
