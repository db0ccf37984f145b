"""``/login`` and ``/logout``: sign in with the console password, or by name and password
when ``BRIDGE_CONSOLE_USERS_FILE`` names the operators (:mod:`bridge.console.users`; the
session then remembers the name); sign out.

The sign-in form carries a one-time token that must match a cookie set with the form
(double submit), so another site cannot sign a browser in. Attempts are limited per client
address and overall (:mod:`bridge.console.signins`: 429 with ``Retry-After``), the password
is checked off the event loop (an unknown name costs the same as a known one), a wrong one
waits a moment before answering, and the log gets the client address only (and, once signed
in, the operator's name), summed up rather than a line per guess.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import aiohttp_jinja2
from aiohttp import web

from bridge.console.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    check_password,
    csrf_ok,
    safe_next,
    set_session_cookie,
)
from bridge.console.signins import Busy
from bridge.console.state import console_of

log = logging.getLogger("bridge.console")
FAILURE_DELAY = 0.5


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", show)
    app.router.add_post("/login", sign_in)
    app.router.add_post("/logout", sign_out)


def _form(
    request: web.Request, error: str | None, status: int = 200, name: str = ""
) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = aiohttp_jinja2.render_template(
        "login.html",
        request,
        {
            "login_token": token,
            "error": error,
            "next": safe_next(request.query.get("next")),
            "named": console_of(request).users is not None,
            "name": name,
        },
        status=status,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=console_of(request).secure(request),
        path="/login",
        max_age=3600,
    )
    return response


async def show(request: web.Request) -> web.Response:
    return _form(request, None)


async def sign_in(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await request.post()
    token = form.get("login_token")
    if not csrf_ok(
        request.cookies.get(LOGIN_COOKIE, ""), token if isinstance(token, str) else None
    ):
        return _form(request, "The sign-in form expired: try again.", status=403)
    address = console.client(request)
    wait = console.signins.begin(address)
    if wait is not None:
        return _limited(request, wait)
    password = form.get("password")
    given_name = form.get("name")
    name = given_name.strip() if isinstance(given_name, str) else ""
    users = console.users
    try:
        if not isinstance(password, str):
            right = False
        elif users is not None:
            right = await console.password_checks.run(users.check, name, password)
        else:
            right = await console.password_checks.run(check_password, console.password, password)
    except Busy:
        return _limited(request, 1)
    if not right:
        if console.signins.failed(address):
            log.warning("console: sign-in refused (wrong password) from %s", address)
        await asyncio.sleep(FAILURE_DELAY)
        wrong = "Wrong name or password." if users is not None else "Wrong password."
        return _form(request, wrong, status=401, name=name[:64])
    console.signins.succeeded(address)
    user = name if users is not None else None
    session_token, _ = console.sessions.new(user)
    if user is not None:
        log.info("console: %s signed in from %s (their older sessions ended)", user, address)
    else:
        log.info("console: signed in from %s (older sessions ended)", address)
    target = form.get("next")
    response = web.HTTPSeeOther(safe_next(target if isinstance(target, str) else None))
    set_session_cookie(response, session_token, console.secure(request))
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


def _limited(request: web.Request, wait: int) -> web.Response:
    response = _form(
        request,
        f"Too many sign-in attempts: try again in {wait} s.",
        status=429,
    )
    response.headers["Retry-After"] = str(wait)
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    console_of(request).sessions.drop(request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response
