"""``/replay``: replay webhooks from the archive into one subscriber's queue.

The form (window, events, order, target subscriber) first runs a dry run and shows how many
webhooks match; only the confirmation sends them, at most the confirmed count, as a
background job (:mod:`jobs`) whose progress the page polls and which can be cancelled. One
replay runs per subscriber at a time: a second is refused with 409 naming the running one.
The copies are made by :func:`bridge.archive.replay.replay`: each confirmed, never
re-archived, sent to the subscriber's queue only. Logged with the window, events, target
and counts (the order filter is not logged).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiMapping

from bridge.console.auth import operator_of
from bridge.console.jobs import Job, Running
from bridge.console.sources import archive_available
from bridge.console.state import Console, console_of
from bridge.console.views import confirmed_count
from bridge.core.audit import Via
from bridge.core.contract import EVENTS
from bridge.core.settings import SettingsError

log = logging.getLogger("bridge.console")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/replay", form)
    app.router.add_post("/replay", submit)
    app.router.add_get("/replay/jobs/{job}", job_page)
    app.router.add_get("/replay/jobs/{job}/progress", job_progress)
    app.router.add_post("/replay/jobs/{job}/cancel", cancel)


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
    expected = confirmed_count(data.get("count"))
    running = console.jobs.running(values["to"])
    if running is not None:
        return _busy(request, console, values, running)

    async def work(job: Job) -> str:
        job.total = expected
        result = await replay(
            console.amqp_urls,
            console.exchange,
            query,
            values["to"],
            on_progress=job.progress,
            limit=expected,
            operator=operator_of(request),
            via=Via.CONSOLE,
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

    try:
        job = console.jobs.start(f"archive replay to {values['to']}", work, key=values["to"])
    except Running as exc:
        return _busy(request, console, values, exc.job)
    raise web.HTTPSeeOther(f"/replay/jobs/{job.id}")


def _busy(request: web.Request, console: Console, values: dict[str, Any], job: Job) -> web.Response:
    error = (
        f"A replay to {values['to']} is already running (job {job.id}, {job.done} sent so "
        f"far): wait for it to finish, or stop it at /replay/jobs/{job.id}."
    )
    context = _context(console, values, error=error)
    return aiohttp_jinja2.render_template("replay.html", request, context, status=409)


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


async def cancel(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    if console_of(request).jobs.cancel(job.id) is not None and not job.finished:
        log.info(
            "console: %s (job %s) stopped by an operator after %d", job.title, job.id, job.done
        )
    raise web.HTTPSeeOther(f"/replay/jobs/{job.id}")
