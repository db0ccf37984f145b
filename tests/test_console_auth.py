"""The console without a browser: sign-in required for every page and action, CSRF enforced,
passwords (plain or hashed) checked, and no non-loopback listener without a password."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.cli import main
from bridge.console.app import build_app
from bridge.console.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    check_password,
    hash_password,
    is_loopback,
    safe_next,
)
from tests.console_helpers import PASSWORD, console_state, csrf_of, post_sign_in, sign_in
from tests.worker_helpers import subscriber

PAGES = [
    "/",
    "/overview/live",
    "/orders?q=20285",
    "/orders/webhooks/1?id=x&at=2026-11-30T10:00:00%2B00:00",
    "/subscribers/erp/dead-letters",
    "/subscribers/erp/dead-letters/0123456789abcdef0123456789abcdef",
    "/replay",
    "/replay/jobs/0011223344556677",
    "/replay/jobs/0011223344556677/progress",
]
ACTIONS = [
    "/subscribers/erp/dead-letters/replay",
    "/subscribers/erp/dead-letters/discard",
    "/replay",
    "/logout",
]


@pytest.fixture
async def client(exchange: str) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(console_state(exchange, [subscriber(name="erp")]))
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_every_page_and_action_needs_a_sign_in(client: TestClient[Any, Any]) -> None:
    for page in PAGES:
        answer = await client.get(page, allow_redirects=False)
        assert answer.status == 303, page
        assert answer.headers["Location"].startswith("/login?next="), page
    for action in ACTIONS:
        answer = await client.post(action, data={"all": "1", "id": "x"}, allow_redirects=False)
        assert answer.status == 403, action
    # An htmx refresh is sent to the sign-in page as a whole, not swapped into a fragment.
    answer = await client.get("/overview/live", headers={"HX-Request": "true"})
    assert (answer.status, answer.headers.get("HX-Redirect")) == (204, "/login")
    # A forged session cookie is no session.
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: "forged"})
    assert (await client.get("/", allow_redirects=False)).status == 303
    # The sign-in page and static files are public.
    assert (await client.get("/login")).status == 200
    assert (await client.get("/static/console.css")).status == 200


async def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_a_wrong_password(
    client: TestClient[Any, Any],
) -> None:
    form = await (await client.get("/login")).text()
    assert 'type="password"' in form
    wrong = await post_sign_in(client, form, "nope", next=None)
    assert wrong.status == 401
    assert "Wrong password" in await wrong.text()
    right = await post_sign_in(client, await wrong.text(), PASSWORD, next="/replay")
    assert (right.status, right.headers["Location"]) == (303, "/replay")
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    assert (await client.get("/replay", allow_redirects=False)).status == 200


async def test_the_sign_in_form_needs_its_own_token(client: TestClient[Any, Any]) -> None:
    await client.get("/login")
    answer = await client.post(
        "/login", data={"login_token": "guess", "password": PASSWORD}, allow_redirects=False
    )
    assert answer.status == 403
    client.session.cookie_jar.clear()
    answer = await client.post("/login", data={"password": PASSWORD}, allow_redirects=False)
    assert answer.status == 403
    assert LOGIN_COOKIE  # the double-submit cookie's name is part of the contract above


async def test_every_change_needs_the_csrf_token(client: TestClient[Any, Any]) -> None:
    csrf = await sign_in(client)
    for action in ACTIONS:
        for fields in ({}, {"csrf": "wrong"}, {"csrf": ""}):
            answer = await client.post(
                action, data={"all": "1", "id": "x", **fields}, allow_redirects=False
            )
            assert answer.status == 403, (action, fields)
            assert "CSRF" in await answer.text()
    # With the token the action runs (here: asks for a confirmation first).
    answer = await client.post(
        "/subscribers/erp/dead-letters/discard",
        data={"csrf": csrf, "id": "0123456789abcdef0123456789abcdef"},
    )
    assert answer.status == 200
    assert "Discard 1 dead letter" in await answer.text()
    assert csrf_of(await answer.text()) == csrf
    # The header form (what htmx sends) works as well.
    answer = await client.post("/logout", headers={"X-CSRF-Token": csrf}, allow_redirects=False)
    assert answer.status == 303
    assert (await client.get("/", allow_redirects=False)).status == 303


def test_passwords_plain_scrypt_and_pbkdf2() -> None:
    assert check_password("s3cret", "s3cret")
    assert not check_password("s3cret", "s3cret ")
    hashed = hash_password("s3cret")
    assert hashed.startswith("scrypt:") and "s3cret" not in hashed
    assert check_password(hashed, "s3cret") and not check_password(hashed, "other")
    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"s3cret", salt, 1000).hex()
    pbkdf2 = f"pbkdf2:sha256:1000:{salt.hex()}:{digest}"
    assert check_password(pbkdf2, "s3cret") and not check_password(pbkdf2, "S3cret")
    assert not check_password("scrypt:1:2:3:zz:zz", "x")


def test_loopback_and_next() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert safe_next("/orders?q=1") == "/orders?q=1"
    for bad in ("//evil.example", "https://evil.example", "\\\\evil", None, ""):
        assert safe_next(bad) == "/"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::"])
def test_refuses_a_non_loopback_host_without_a_password(
    host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BRIDGE_CONSOLE_PASSWORD", raising=False)
    monkeypatch.setenv("BRIDGE_CONSOLE_HOST", host)
    assert main(["console"]) == 2
    err = capsys.readouterr().err
    assert "BRIDGE_CONSOLE_PASSWORD" in err and len(err.strip().splitlines()) == 1


def test_a_malformed_hash_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_CONSOLE_PASSWORD", "scrypt:nope")
    assert main(["console"]) == 2
    err = capsys.readouterr().err
    assert "malformed" in err and "scrypt:nope" not in err


def test_without_a_terminal_no_password_is_made_up_and_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under a service manager stderr is a log: a password made for the run would be kept
    there. Without a terminal the console asks for BRIDGE_CONSOLE_PASSWORD instead."""
    monkeypatch.delenv("BRIDGE_CONSOLE_PASSWORD", raising=False)
    monkeypatch.setenv("BRIDGE_CONSOLE_HOST", "127.0.0.1")
    assert main(["console"]) == 2  # pytest's captured stderr is not a terminal
    err = capsys.readouterr().err
    assert "BRIDGE_CONSOLE_PASSWORD" in err and len(err.strip().splitlines()) == 1
    assert "password for this run" not in err
