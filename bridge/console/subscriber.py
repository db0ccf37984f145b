"""``/subscribers/<name>``: one subscriber, what it is doing and why
(:mod:`bridge.console.subscriber_state`), its queue depths per step, and the pause / resume
button; ``POST /subscribers/<name>/pause`` and ``.../resume`` (signed in, with the CSRF
token, like every POST of the console; 404 for a subscriber not in the subscribers file).

A pause or resume is the new state written to ``<name>.control`` through the one confirmed
publish (:func:`bridge.amqp.control.write_state`): once the broker confirmed it, every worker
of the subscriber follows within seconds (:mod:`bridge.worker.pause`). A broker that does not
take it is a 502 page naming the fix; the change is logged with its operator and leaves an
audit record (:mod:`bridge.amqp.audit`, never failing the change).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from bridge.amqp.audit import write_audit
from bridge.amqp.connection import close_quietly
from bridge.amqp.control import StateNotSet, write_state
from bridge.amqp.topology import control_name, roster_name
from bridge.console.auth import flash, operator_of, take_notice
from bridge.console.looked import look
from bridge.console.queues import subscriber_stats
from bridge.console.state import console_of
from bridge.console.subscriber_state import state_of
from bridge.core.audit import Action, Via, audit_record
from bridge.errors import CommandError

log = logging.getLogger("bridge.console")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/subscribers/{name}", page)
    app.router.add_post("/subscribers/{name}/pause", pause)
    app.router.add_post("/subscribers/{name}/resume", resume)


@aiohttp_jinja2.template("subscriber.html")
async def page(request: web.Request) -> dict[str, Any]:
    console = console_of(request)
    sub = console.subscriber(request.match_info["name"])
    stats = await look(subscriber_stats(console.broker, [sub]))
    stat = stats.rows[0] if stats.rows else None
    return {
        "sub": sub,
        "reason": stats.reason,
        "stat": stat,
        "state": state_of(stat) if stat is not None else None,
        "control_queue": control_name(sub.name),
        "roster_queue": roster_name(sub.name),
        "notice": take_notice(request),
    }


async def pause(request: web.Request) -> web.StreamResponse:
    return await _change(request, paused=True)


async def resume(request: web.Request) -> web.StreamResponse:
    return await _change(request, paused=False)


async def _change(request: web.Request, *, paused: bool) -> web.StreamResponse:
    console = console_of(request)
    sub = console.subscriber(request.match_info["name"])
    operator = operator_of(request)
    connection = await console.broker.connection()
    channel = await connection.channel(publisher_confirms=True)
    try:
        await write_state(channel, sub.name, paused, operator)
        action = Action.PAUSE if paused else Action.RESUME
        record = audit_record(action, operator=operator, via=Via.CONSOLE, subscriber=sub.name)
        await write_audit(channel, console.exchange, record)  # never fails the change
    except StateNotSet as exc:
        raise CommandError(str(exc)) from None
    finally:
        await close_quietly(channel)
    verb = "paused" if paused else "resumed"
    log.info(
        "console: subscriber %s %s by %s (from %s)",
        sub.name,
        verb,
        operator or "the signed-in operator",
        request.remote,
    )
    notice = (
        "Paused: its workers stop taking messages within seconds; messages wait in its queue."
        if paused
        else "Resumed: its workers take messages again within seconds."
    )
    flash(request, notice)
    raise web.HTTPSeeOther(f"/subscribers/{sub.name}")
