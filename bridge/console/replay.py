"""``/replay``: replay webhooks from the archive into one subscriber's queue.

The form (window, events, order or message id, target subscriber) first runs a dry run: it
counts only the webhooks the target takes (its events and client / warehouse filters; the
others are counted by why they were left out), fixes the window as absolute times, says how
fast the copies will go (the target's ``rate_limit``, or a default) and warns, before the
confirm button, when the target is paused, its target is down, no worker runs it, or its
state could not be read. The confirmation carries that plan (:mod:`replay_plan`) and sends
at most the confirmed count of exactly that window, paced, as a background job (:mod:`jobs`)
whose progress the page polls and which can be cancelled. One replay runs per subscriber at
a time: a second is refused with 409 naming the running one. ``/replay`` lists the replays
(:mod:`replay_history`): those this console runs (who, when, target, window, copied of
counted, outcome) and, with a ledger, every archive replay its audit records hold, from the
console or the command line, across console restarts.

The copies are made by :func:`bridge.archive.replay.replay`: each confirmed, never
re-archived, sent to the subscriber's queue only. Logged with the window, events, target
and counts (the order filter is not logged). The webhook and order pages post here ("Replay
to...") with their message id or order id and a window around them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from bridge.console.auth import operator_of
from bridge.console.jobs import Job, Running
from bridge.console.looked import look
from bridge.console.queues import subscriber_stats
from bridge.console.replay_history import replay_history
from bridge.console.replay_plan import (
    audience_of,
    confirmed_plan,
    counted_plan,
    form_values,
    left_out_lines,
    pace_of,
    pace_text,
    shown,
)
from bridge.console.sources import archive_available
from bridge.console.state import Console, console_of
from bridge.console.subscriber_state import Kind, state_of
from bridge.console.views import confirmed_count, format_time
from bridge.core.audit import Via
from bridge.core.contract import EVENTS
from bridge.core.settings import SettingsError
from bridge.worker.subscribers import Subscriber

log = logging.getLogger("bridge.console")


def now() -> datetime:
    """The clock a dry run fixes its window with (a test replaces it)."""
    return datetime.now(UTC)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/replay", form)
    app.router.add_post("/replay", submit)
    app.router.add_get("/replay/jobs/{job}", job_page)
    app.router.add_get("/replay/jobs/{job}/progress", job_progress)
    app.router.add_post("/replay/jobs/{job}/cancel", cancel)


@dataclass(frozen=True)
class TargetWarning:
    """Why the copies will not reach the target soon (shown before the confirm button)."""

    kind: str
    text: str


async def target_warning(console: Console, sub: Subscriber) -> TargetWarning | None:
    """What the broker says about ``sub`` that the operator must know before sending;
    ``None`` when it is consuming."""
    looked = await look(subscriber_stats(console.broker, [sub]))
    if looked.rows is None:
        return TargetWarning(
            "could-not-look",
            f"Could not look at {sub.name}'s state ({looked.reason}): whether it is paused "
            "or its target is down is not known.",
        )
    state = state_of(looked.rows[0])
    if state.kind is Kind.PAUSED:
        text = (
            f"{sub.name} is paused ({state.text}): the copies wait in its queue until it "
            "is resumed."
        )
    elif state.kind is Kind.TARGET_DOWN:
        text = (
            f"{sub.name}'s target is down ({state.text}): the copies wait in its queue behind "
            "what already waits, and go out when the target answers again."
        )
    elif state.kind is Kind.NO_WORKER:
        text = f"No worker runs {sub.name}: the copies wait in its queue until one starts."
    elif state.kind is Kind.NOT_DECLARED:
        text = (
            f"{sub.name}'s queue is not declared yet: the replay fails until its worker has "
            "started once (or topology --config declared it)."
        )
    else:
        return None
    return TargetWarning(str(state.kind), text)


async def _context(console: Console, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "values": values,
        "events": EVENTS,
        "targets": [sub.name for sub in console.subscribers],
        "available": archive_available(),
        "count": None,
        "plan": None,
        "left_out": [],
        "pace": None,
        "warning": None,
        "error": None,
        "history": await replay_history(console),
        "format_time": format_time,
        "shown": shown,
        **extra,
    }


async def form(request: web.Request) -> web.Response:
    console = console_of(request)
    values = form_values(request.query, request.query.getall("event", []))
    return aiohttp_jinja2.render_template("replay.html", request, await _context(console, values))


def _target(console: Console, name: str) -> Subscriber:
    for sub in console.subscribers:
        if sub.name == name:
            return sub
    raise SettingsError("Choose the subscriber to send to.")


async def submit(request: web.Request) -> web.StreamResponse:
    from bridge.archive.pace import Pacer
    from bridge.archive.replay import replay

    console = console_of(request)
    data = await request.post()
    values = form_values(data, [str(e) for e in data.getall("event", [])])
    confirmed = data.get("confirmed") == "1"
    try:
        sub = _target(console, values["to"])
        if confirmed:
            expected = confirmed_count(data.get("count"))
            plan = confirmed_plan(values, data)
        else:
            plan = counted_plan(values, now())
    except SettingsError as exc:
        context = await _context(console, values, error=str(exc))
        return aiohttp_jinja2.render_template("replay.html", request, context, status=400)
    audience = audience_of(sub)
    if not confirmed:
        dry = await replay(
            console.broker,
            console.exchange,
            plan.query(),
            plan.to,
            dry_run=True,
            audience=audience,
        )
        context = await _context(
            console,
            values,
            count=dry.matched,
            plan=plan,
            left_out=left_out_lines(dry.left_out, sub),
            pace=pace_text(sub, dry.matched),
            warning=await target_warning(console, sub),
        )
        return aiohttp_jinja2.render_template("replay.html", request, context)
    running = console.jobs.running(plan.to)
    if running is not None:
        return await _busy(request, console, values, running)
    operator = operator_of(request)
    rate, why = pace_of(sub)
    plan = replace(plan, pace=f"at most {rate.text} ({why})")

    async def work(job: Job) -> str:
        job.total = expected
        result = await replay(
            console.broker,
            console.exchange,
            plan.query(),
            plan.to,
            on_progress=job.progress,
            limit=expected,
            operator=operator,
            via=Via.CONSOLE,
            audience=audience,
            pacer=Pacer(rate),
        )
        job.progress(result.sent, expected)
        log.info(
            "console: replayed %d of %d counted archived webhooks to %s (window %s..%s, "
            "events %s, at most %s, replay id %s, by %s)",
            result.sent,
            expected,
            plan.to,
            plan.since.isoformat(),
            plan.until.isoformat(),
            ",".join(plan.events) or "all",
            rate.text,
            result.replay_id,
            operator or "the signed-in operator",
        )
        missing = expected - result.sent
        gone = f" ({missing} no longer in the archive)" if missing > 0 else ""
        return (
            f"Sent {result.sent} of {expected} to {plan.to}{gone}; x-replay-id {result.replay_id}."
        )

    try:
        job = console.jobs.start(
            f"archive replay to {plan.to}", work, key=plan.to, started_by=operator, plan=plan
        )
    except Running as exc:
        return await _busy(request, console, values, exc.job)
    raise web.HTTPSeeOther(f"/replay/jobs/{job.id}")


async def _busy(
    request: web.Request, console: Console, values: dict[str, Any], job: Job
) -> web.Response:
    error = (
        f"A replay to {values['to']} is already running (job {job.id}, {job.done} sent so "
        f"far): wait for it to finish, or stop it at /replay/jobs/{job.id}."
    )
    context = await _context(console, values, error=error)
    return aiohttp_jinja2.render_template("replay.html", request, context, status=409)


def _job(request: web.Request) -> Job:
    job = console_of(request).jobs.get(request.match_info["job"])
    if job is None:
        raise web.HTTPNotFound(text="No such replay (the console was restarted since?).")
    return job


@aiohttp_jinja2.template("replay_job.html")
async def job_page(request: web.Request) -> dict[str, Any]:
    return {"job": _job(request), "format_time": format_time}


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
