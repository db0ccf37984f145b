"""The console against an attacker (issue 22, points 1, 2, 4-9, 11): sign-in limits and
password checks off the event loop, ``next=`` only to a local path, Secure cookies over
https, a Host allow-list, ``Server: mintsoft-bridge``, 400s for bad values, notices kept
server-side, idle and superseded sessions, placeholder passwords refused off loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from bridge.amqp.topology import dlq_name
from bridge.cli import main
from bridge.console import login
from bridge.console.app import build_app
from bridge.console.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Sessions,
    hash_password,
    require_password_off_loopback,
    safe_next,
)
from bridge.console.state import Console
from bridge.core.settings import SettingsError
from tests.conftest import BrokerProbe
from tests.console_helpers import PASSWORD, console_state, post_sign_in, sign_in
from tests.worker_helpers import subscriber

KUBERNETES = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


@pytest.fixture
async def client(exchange: str) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(console_state(exchange, [subscriber(name="erp")]))
    async with TestClient(TestServer(app)) as client:
        yield client


async def _client_for(console: Console) -> TestClient[Any, Any]:
    """A client without a cookie jar: each sign-in attempt carries its own form token."""
    client: TestClient[Any, Any] = TestClient(
        TestServer(build_app(console)), cookie_jar=aiohttp.DummyCookieJar()
    )
    await client.start_server()
    return client


async def _attempt(
    client: TestClient[Any, Any], password: str, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    token = "t0ken-" + "x" * 20
    return await client.post(
        "/login",
        data={"login_token": token, "password": password, "next": "/"},
        headers={"Cookie": f"{LOGIN_COOKIE}={token}", **(headers or {})},
        allow_redirects=False,
    )


class CountedChecks:
    """Wraps the console's password check: counts the checks started and finished, and
    can hold them (in whichever thread runs them) until released."""

    def __init__(self, real: Callable[[str, str], bool]) -> None:
        self.real = real
        self.started = 0
        self.finished = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def __call__(self, configured: str, given: str) -> bool:
        with self._lock:
            self.started += 1
        if threading.current_thread() is not threading.main_thread():
            self.gate.wait(30)  # held off the loop only: on the loop it would freeze it
        try:
            return self.real(configured, given)
        finally:
            with self._lock:
                self.finished += 1


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> CountedChecks:
    counted = CountedChecks(login.check_password)
    monkeypatch.setattr(login, "check_password", counted)
    return counted


# 1. Password guessing


async def test_parallel_wrong_guesses_from_one_address_are_limited_with_retry_after(
    exchange: str, checks: CountedChecks, caplog: pytest.LogCaptureFixture
) -> None:
    client = await _client_for(console_state(exchange, []))
    try:
        with caplog.at_level(logging.INFO, logger="bridge.console"):
            answers = await asyncio.gather(*(_attempt(client, f"guess-{i}") for i in range(200)))
        statuses = [a.status for a in answers]
        assert statuses.count(401) <= 5, statuses
        assert checks.started <= 5  # the rest were refused before any password check
        limited = [a for a in answers if a.status == 429]
        assert len(limited) >= 195
        assert all(int(a.headers["Retry-After"]) > 0 for a in limited)
        assert "Too many" in await limited[0].text()
        # While limited, even the right password waits: guessing cannot go on in parallel.
        assert (await _attempt(client, PASSWORD)).status == 429
        # A summary, not a line per guess.
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert 1 <= len(warnings) <= 3, [r.getMessage() for r in warnings]
    finally:
        await client.close()


async def test_wrong_guesses_from_many_addresses_meet_the_overall_limit(
    exchange: str, checks: CountedChecks
) -> None:
    console = dataclasses.replace(
        console_state(exchange, []), trusted_proxies=("127.0.0.1",), overall_failures=20
    )
    client = await _client_for(console)
    try:
        statuses = []
        for i in range(30):  # each from its own address, as a proxy reports it
            answer = await _attempt(client, "nope", {"X-Forwarded-For": f"203.0.113.{i}"})
            statuses.append(answer.status)
        assert statuses[:20] == [401] * 20
        assert set(statuses[20:]) == {429}
        assert checks.started == 20
    finally:
        await client.close()


# 2. A hashed password never freezes the console


async def test_healthz_answers_while_100_wrong_hashed_sign_ins_are_being_checked(
    exchange: str, checks: CountedChecks
) -> None:
    console = console_state(exchange, [], password=hash_password(PASSWORD))
    client = await _client_for(console)
    checks.gate.clear()  # every password check now waits until released
    try:
        guesses = [asyncio.ensure_future(_attempt(client, f"g-{i}")) for i in range(100)]
        deadline = asyncio.get_running_loop().time() + 30
        while checks.started == 0:
            assert asyncio.get_running_loop().time() < deadline, "no check started"
            await asyncio.sleep(0.01)
        # A check is running and none has finished: the console still answers.
        health = await client.get("/healthz")
        assert health.status == 200
        assert checks.finished == 0 and checks.started >= 1
        checks.gate.set()
        statuses = [answer.status for answer in await asyncio.gather(*guesses)]
        assert set(statuses) <= {401, 429} and statuses.count(401) >= 1
    finally:
        checks.gate.set()
        await client.close()


# 4. Open redirect


@pytest.mark.parametrize(
    "bad",
    [
        "/\t/evil.example/phish",
        "/\n/evil.example",
        "/\r/evil.example",
        "\t//evil.example",
        "/ /evil.example",
        "/\x00/evil.example",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "evil.example",
        "/%09/evil.example",
    ],
)
def test_next_is_only_a_local_path(bad: str) -> None:
    assert safe_next(bad) in {"/", "/%09/evil.example"}
    assert not safe_next(bad).startswith("//")


async def test_a_next_with_a_tab_is_not_followed_after_sign_in(
    client: TestClient[Any, Any],
) -> None:
    form = await (await client.get("/login?next=/%09/evil.example/phish")).text()
    assert "evil.example" not in form
    answer = await post_sign_in(client, form, PASSWORD, next="/\t/evil.example/phish")
    assert (answer.status, answer.headers["Location"]) == (303, "/")


# 5. Secure cookies over https


async def test_the_session_cookie_is_secure_when_the_console_is_reached_over_https(
    exchange: str,
) -> None:
    cases: list[tuple[dict[str, Any], dict[str, str], bool]] = [
        ({}, {}, False),
        ({}, {"X-Forwarded-Proto": "https"}, False),  # not from a trusted proxy
        ({"trusted_proxies": ("127.0.0.1",)}, {"X-Forwarded-Proto": "https"}, True),
        ({"trusted_proxies": ("127.0.0.0/8",)}, {"X-Forwarded-Proto": "http"}, False),
        ({"secure_cookies": True}, {}, True),
    ]
    for fields, headers, secure in cases:
        client = await _client_for(dataclasses.replace(console_state(exchange, []), **fields))
        try:
            form = await client.get("/login", headers=headers)
            assert ("Secure" in form.headers["Set-Cookie"]) is secure, (fields, headers)
            answer = await _attempt(client, PASSWORD, headers)
            assert answer.status == 303
            cookie = answer.headers.getall("Set-Cookie")
            session = next(c for c in cookie if c.startswith(SESSION_COOKIE))
            assert ("Secure" in session) is secure, (fields, headers, session)
        finally:
            await client.close()


# 6. Host allow-list


async def test_only_the_configured_hosts_reach_the_console(exchange: str) -> None:
    console = dataclasses.replace(
        console_state(exchange, []),
        listen_host="console.internal",
        allowed_hosts=("ops.example.com",),
    )
    client = await _client_for(console)
    try:
        for host in ("evil.example", "evil.example:8090", "127.0.0.1.evil.example", "10.0.0.9"):
            answer = await client.get("/login", headers={"Host": host})
            assert answer.status == 400, host
            assert "BRIDGE_CONSOLE_ALLOWED_HOSTS" in await answer.text()
        for host in (
            "127.0.0.1",
            "localhost:8090",
            "[::1]:8090",
            "console.internal:8090",
            "OPS.example.com",
        ):
            assert (await client.get("/login", headers={"Host": host})).status == 200, host
        # Probes address the pod by its IP: /healthz says nothing and answers any Host.
        assert (await client.get("/healthz", headers={"Host": "10.1.2.3:8090"})).status == 200
    finally:
        await client.close()


# 7. Server header


async def test_every_answer_says_server_mintsoft_bridge_without_a_version(
    client: TestClient[Any, Any],
) -> None:
    answers = [
        await client.get("/login"),
        await client.get("/healthz"),
        await client.get("/static/console.css"),
        await client.get("/", allow_redirects=False),
        await client.get("/no-such-page", allow_redirects=False),
        await client.post("/replay", allow_redirects=False),
        await client.get("/login", headers={"Host": "evil.example"}),
    ]
    for answer in answers:
        assert answer.headers.get("Server") == "mintsoft-bridge", (answer.url, answer.status)


# 8. Bad values are 400 with a sentence


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/orders?q=20285&since=36500d", False),  # before 1970: read from the start
        ("/orders?q=20285&since=0001-01-01T00:00:00Z", False),
        ("/orders?q=20285&since=99999999999999d", True),
        ("/orders?q=20285&since=yesterday", True),
        ("/orders?q=20285&until=0001-01-01T00:00:00Z", True),  # until before since
        ("/orders/webhooks/0?at=0001-01-01T00:00:00", True),
        ("/orders/webhooks/0?at=9999-12-31T23:59:59.999999%2B00:00", True),
        ("/orders/webhooks/0?at=nope", True),
        ("/orders/webhooks/x?at=2026-11-30T10:00:00Z", True),
        ("/orders/webhooks/99999999999999999999999?at=2026-11-30T10:00:00Z", True),
        ("/replay?since=36500d", False),
    ],
)
async def test_bad_query_values_are_400_with_a_sentence_never_500(
    client: TestClient[Any, Any], path: str, refused: bool
) -> None:
    await sign_in(client)
    answer = await client.get(path, allow_redirects=False)
    text = await answer.text()
    assert answer.status != 500 and "Internal Server Error" not in text, (path, text[:300])
    if refused:
        assert answer.status == 400, (path, answer.status, text[:300])
        assert '<p class="error"' in text or "error" in text.lower()


@pytest.mark.parametrize("count", ["abc", "-1", "1.5", "²", "9" * 5000])
async def test_a_confirmed_replay_with_a_bad_count_is_400(
    client: TestClient[Any, Any], count: str
) -> None:
    csrf = await sign_in(client)
    answer = await client.post(
        "/replay",
        data={"csrf": csrf, "since": "1h", "to": "erp", "confirmed": "1", "count": count},
        allow_redirects=False,
    )
    assert answer.status == 400, (count, answer.status)
    assert "count" in (await answer.text()).lower()


# 9. Notices are not taken from the URL


async def test_a_notice_comes_from_the_server_once_never_from_the_url(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(name=f"erp-{exchange.rsplit('.', 1)[-1]}")
    channel = await probe._chan()
    await channel.queue_declare(dlq_name(sub.name), durable=True)
    probe.track(queues=(dlq_name(sub.name),))
    app = build_app(console_state(exchange, [sub]))
    async with TestClient(TestServer(app)) as client:
        csrf = await sign_in(client)
        page = f"/subscribers/{sub.name}/dead-letters"
        spoof = await client.get(page + "?notice=Your+session+expired%3A+call+0800-SCAM")
        assert spoof.status == 200
        assert "0800-SCAM" not in await spoof.text()
        done = await client.post(
            page + "/discard",
            data={"csrf": csrf, "id": "0123456789abcdef0123456789abcdef", "confirmed": "1"},
        )
        assert "Discarded 0 dead letters" in await done.text()
        assert "notice=" not in str(done.url)
        again = await client.get(page)  # shown once
        assert "Discarded 0 dead letters" not in await again.text()


# 11. Sessions: idle timeout, one per sign-in, no placeholder passwords off loopback


def test_a_session_ends_when_idle_and_lives_while_used() -> None:
    now = [1000.0]
    sessions = Sessions(idle=600, lifetime=3600, clock=lambda: now[0])
    token, _ = sessions.new()
    for _ in range(5):
        now[0] += 500  # used every 500 s: alive past several idle periods
        assert sessions.get(token) is not None
    now[0] += 601
    assert sessions.get(token) is None
    token, _ = sessions.new()
    for _ in range(8):  # never idle, but the lifetime still ends it
        now[0] += 500
        sessions.get(token)
    assert sessions.get(token) is None


async def test_signing_in_again_ends_the_older_sessions(exchange: str) -> None:
    server = TestServer(build_app(console_state(exchange, [])))
    async with TestClient(server) as first, TestClient(server) as second:
        await sign_in(first)
        assert (await first.get("/replay", allow_redirects=False)).status == 200
        await sign_in(second)
        assert (await second.get("/replay", allow_redirects=False)).status == 200
        answer = await first.get("/replay", allow_redirects=False)
        assert answer.status == 303 and answer.headers["Location"].startswith("/login")


@pytest.mark.parametrize(
    "password",
    ["CHANGE-ME", "changeme", "password", "dev-console-password", "admin", " Change-Me "],
)
def test_a_placeholder_password_is_refused_off_loopback(password: str) -> None:
    with pytest.raises(SettingsError) as refused:
        require_password_off_loopback("0.0.0.0", password)
    assert "placeholder" in str(refused.value) and password.strip() not in str(refused.value)
    require_password_off_loopback("127.0.0.1", password)  # a local trial may use one


def test_a_hash_of_a_placeholder_is_refused_too() -> None:
    with pytest.raises(SettingsError):
        require_password_off_loopback("0.0.0.0", hash_password("changeme"))
    require_password_off_loopback("0.0.0.0", hash_password("a-real-passphrase-2f9c"))


def test_the_console_command_refuses_a_placeholder_off_loopback_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_CONSOLE_HOST", "0.0.0.0")
    monkeypatch.setenv("BRIDGE_CONSOLE_PASSWORD", "CHANGE-ME")
    assert main(["console"]) == 2
    err = capsys.readouterr().err
    assert "BRIDGE_CONSOLE_PASSWORD" in err and len(err.strip().splitlines()) == 1


def test_the_kubernetes_example_ships_no_usable_console_password() -> None:
    secret = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())
    with pytest.raises(SettingsError):
        require_password_off_loopback("0.0.0.0", secret["stringData"]["console-password"])
