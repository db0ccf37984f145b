"""The console's wiring: its state, the routes of every page, templates, static files,
security headers and error pages; and serving it on its own listener.

The console never shares a listener with the receiver: it is a separate process
(``mintsoft-bridge console``) on ``BRIDGE_CONSOLE_HOST:BRIDGE_CONSOLE_PORT``. A handler that
fails renders an error page naming what went wrong (a broker error is one line); a bad
value is a 400 naming it, never a 500; nothing here shows a credential. Every answer says
``Server: mintsoft-bridge`` (no versions), and only allowed ``Host`` names are served
(:mod:`bridge.console.origin`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from bridge.console import audit, dead_letters, login, orders, overview, replay, subscriber
from bridge.console.auth import SESSION_KEY, make_middleware
from bridge.console.broker import keep_link
from bridge.console.origin import allowed_hosts, host_guard
from bridge.console.state import CONSOLE, Console
from bridge.core.listeners import hide_versions
from bridge.core.settings import SettingsError
from bridge.errors import CommandError

log = logging.getLogger("bridge.console")
HERE = Path(__file__).resolve().parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _context(request: web.Request) -> dict[str, Any]:
    session = request.get(SESSION_KEY)
    app_state = request.app[CONSOLE]
    return {
        "csrf": session.csrf if session is not None else "",
        "signed_in": session is not None,
        "operator": session.user if session is not None else None,
        "subscribers": app_state.subscribers,
        "path": request.path,
    }


@web.middleware
async def _headers_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.text and not exc.content_type.startswith("text/html"):
            response = await _error_page(request, exc.status, exc.text or exc.reason)
        else:
            raise
    except (CommandError, SettingsError) as exc:
        response = await _error_page(
            request, 502 if isinstance(exc, CommandError) else 400, str(exc)
        )
    except (ConnectionError, OSError, TimeoutError) as exc:
        log.warning("console: %s on %s", type(exc).__name__, request.path)
        response = await _error_page(
            request, 502, f"the broker did not answer ({type(exc).__name__})"
        )
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'",
    )
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _error_page(request: web.Request, status: int, message: str) -> web.StreamResponse:
    # Rendered outside the context-processor middleware: give the base template its context.
    context = {**(await _context(request)), "status": status, "message": message}
    return aiohttp_jinja2.render_template("error.html", request, context, status=status)


def build_app(console: Console) -> web.Application:
    """The console application (its own listener; see :func:`serve_console`)."""
    hosts = allowed_hosts(console.listen_host, console.allowed_hosts)
    app = web.Application(
        middlewares=[_headers_and_errors, host_guard(hosts), make_middleware(console.sessions)],
        client_max_size=1024 * 1024,
    )
    hide_versions(app)
    app[CONSOLE] = console
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        context_processors=[_context],
        undefined=jinja2.StrictUndefined,
    )
    login.add_routes(app)
    overview.add_routes(app)
    dead_letters.add_routes(app)
    subscriber.add_routes(app)
    orders.add_routes(app)
    replay.add_routes(app)
    audit.add_routes(app)
    app.router.add_get("/healthz", _healthz)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    app.on_cleanup.append(_stop_jobs)
    keep_link(app, console.broker)
    return app


async def _healthz(request: web.Request) -> web.Response:
    """For probes: the console answers (it says nothing about the broker)."""
    return web.Response(text="ok\n")


async def _stop_jobs(app: web.Application) -> None:
    await app[CONSOLE].jobs.stop()
    app[CONSOLE].password_checks.close()


async def serve_console(
    console: Console, host: str, port: int, stop: asyncio.Event, ready: Callable[[str], None]
) -> None:
    """Serve until ``stop`` is set; ``ready`` gets the URL once listening."""
    runner = web.AppRunner(build_app(console), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise SettingsError(
                f"BRIDGE_CONSOLE_HOST/PORT {host}:{port} cannot be used ({exc.strerror}): "
                "choose a free port with BRIDGE_CONSOLE_PORT or a local address"
            ) from None
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        ready(f"http://{shown}:{bound[1]}/")
        await stop.wait()
    finally:
        await runner.cleanup()
