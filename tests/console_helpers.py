"""Helpers for console tests: a console app in-process against the real broker, and signing
in the way a browser does (the sign-in form's token, then the session's CSRF token)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from bridge.amqp.topology import ArchiveRetention
from bridge.console.state import Console
from bridge.worker.subscribers import Subscriber
from tests.conftest import AMQP_URL, API_KEY, RunningBridge, fixture_body

PASSWORD = "console-test-password-7f3a"
_LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_state(exchange: str, subs: list[Subscriber], password: str = PASSWORD) -> Console:
    return Console(
        amqp_urls=(AMQP_URL,),
        exchange=exchange,
        subscribers=subs,
        password=password,
        archive_retention=ArchiveRetention(),
    )


async def sign_in(client: TestClient[Any, Any], password: str = PASSWORD) -> str:
    """Sign in; returns the session's CSRF token (read from the overview page)."""
    form = await (await client.get("/login")).text()
    answer = await post_sign_in(client, form, password)
    assert answer.status == 303, await answer.text()
    return csrf_of(await (await client.get("/replay")).text())


async def post_sign_in(
    client: TestClient[Any, Any],
    form: str,
    password: str,
    *,
    next: str | None = "/",
    name: str | None = None,
) -> ClientResponse:
    """Send sign-in page ``form`` back (its one-time token) with ``password``, operator
    ``name`` and ``next`` where given; the answer, its redirect not followed."""
    token = _LOGIN_TOKEN.search(form)
    assert token is not None, "no sign-in token on the page"
    data = {"login_token": token.group(1), "password": password}
    if next is not None:
        data["next"] = next
    if name is not None:
        data["name"] = name
    return await client.post("/login", data=data, allow_redirects=False)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


async def archive_despatched(bridge: RunningBridge, times: int = 1) -> None:
    """POST the despatched fixture ``times`` to a bridge that archives (each confirmed)."""
    for _ in range(times):
        answer = await bridge.client.post(
            "/webhooks/despatched",
            params={"APIKEY": API_KEY},
            data=fixture_body("despatched"),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status == 200, await answer.text()
