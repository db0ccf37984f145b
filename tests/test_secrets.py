"""Masking secrets (issue 22 points 12-14): every configured secret in any letter case and
URL-encoded, credential-looking values, and URLs whose password holds ``#``, ``/`` or ``?``."""

from __future__ import annotations

import pytest

from bridge.core.secrets import mask
from bridge.core.values import redact_url

KEY = "MSKEY-abcdef0123"


@pytest.mark.parametrize(
    "echoed",
    [
        KEY,
        KEY.upper(),
        KEY.lower(),
        "MSKEY%2Dabcdef0123",
        "mskey%2dabcdef0123",
        "%4D%53%4B%45%59%2D%61%62%63%64%65%66%30%31%32%33",
    ],
)
def test_a_secret_is_masked_in_any_case_and_url_encoded(echoed: str) -> None:
    text = mask(f"Mintsoft said: key {echoed} is not valid", [KEY])
    assert text == "Mintsoft said: key *** is not valid"


def test_a_secret_with_spaces_is_masked_with_plus_or_percent_20() -> None:
    secret = "open sesame now"
    for echoed in ("open+sesame+now", "open%20sesame%20now", "OPEN SESAME NOW"):
        assert mask(f"x {echoed} y", [secret]) == "x *** y", echoed


def test_a_bearer_value_is_masked_whole_and_as_its_token() -> None:
    header = "Bearer tok-7b1d9e55aa"
    for echoed in (header, "tok-7b1d9e55aa", "TOK-7B1D9E55AA", "tok%2D7b1d9e55aa"):
        text = mask(f"403 credential rejected: {echoed}", [header])
        assert "7b1d9e55aa" not in text.lower(), text
    # Unconfigured values after a scheme or a name are masked too.
    assert "zzz999" not in mask("403 rejected: Bearer zzz999", [])
    assert "zzz999" not in mask("GET /x?apikey=zzz999&a=1", [])


def test_text_without_secrets_is_unchanged() -> None:
    text = "Mintsoft answered GET /api/Order/List with 500: database busy"
    assert mask(text, [KEY, ""]) == text


@pytest.mark.parametrize("password", ["Pa55#word", "Pa55/word", "Pa55?word", "p@ss:w/rd#?x"])
def test_redact_url_never_prints_the_password(password: str) -> None:
    url = f"amqp://guest:{password}@rabbit.example:5672/vhost"
    shown = redact_url(url)
    assert password not in shown
    for piece in ("Pa55", "word", "w/rd"):
        if piece in password:
            assert piece not in shown, shown
    assert shown.startswith("amqp://guest:***@")
    assert shown.endswith("rabbit.example:5672/vhost")


def test_redact_url_keeps_a_url_without_password() -> None:
    for url in ("amqp://rabbit.example:5672/", "https://host.example/path?q=a@b"):
        assert redact_url(url) == url


@pytest.mark.parametrize("password", ["Pa55#qx7z", "Pa55/qx7z", "Pa55?qx7z"])
def test_a_start_up_error_never_prints_the_broker_password(
    password: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import main

    monkeypatch.setenv("BRIDGE_AMQP_URL", f"amqp://guest:{password}@127.0.0.1:5672/")
    assert main(["topology"]) == 2
    printed = capsys.readouterr()
    assert "qx7z" not in printed.err + printed.out
    assert "BRIDGE_AMQP_URL" in printed.err


async def test_a_target_echoing_the_forward_credential_never_shows_it() -> None:
    """Issue 22, 12: ``403 credential rejected: <the forward header value>``, as sent, upper-
    cased, URL-encoded or as the bare token, never reaches x-error, the log or dlq list."""
    from urllib.parse import quote

    from aiohttp import web

    from bridge.errors import PermanentError
    from bridge.worker.forwarder import Forwarder
    from bridge.worker.message import Message
    from tests.support.local_app import serve_locally

    value = "Bearer fwd-9c1e77d0b2"
    echoes = [value, value.upper(), quote(value, safe=""), quote(value).lower(), "fwd-9c1e77d0b2"]

    async def rejecting(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=403, text=f"credential rejected: {echoes.pop()}")

    runner, url = await serve_locally(rejecting)
    forwarder = Forwarder("erp", url + "/in", headers={"X-Credential": value})
    try:
        while echoes:
            message = Message(event="despatched", body=b"{}", message_id="m-1", headers={})
            with pytest.raises(PermanentError) as refused:
                await forwarder(message)
            assert "credential rejected: ***" in str(refused.value)
            assert "9c1e77d0b2" not in str(refused.value).lower()
    finally:
        await forwarder.close()
        await runner.cleanup()


async def test_mintsoft_echoing_its_key_upper_cased_or_encoded_never_shows_it() -> None:
    """Issue 22, 12: the sync's error (its log, ``last_error``, ``sync status``) comes from
    here."""
    from aiohttp import web

    from bridge.mintsoft.client import MintsoftClient, MintsoftError
    from tests.support.local_app import serve_locally

    key = "MSKEY-abcdef0123"
    echoes = [key.upper(), "MSKEY%2Dabcdef0123", "mskey%2dABCDEF0123", key.lower()]

    async def refusing(request: web.Request) -> web.Response:
        return web.json_response({"Message": f"key {echoes.pop()} is not valid"}, status=400)

    runner, url = await serve_locally(refusing)
    try:
        async with MintsoftClient(url, api_key=key) as client:
            while echoes:
                with pytest.raises(MintsoftError) as refused:
                    await client.request("GET", "/api/Order/List")
                assert "key *** is not valid" in str(refused.value)
                assert "abcdef0123" not in str(refused.value).lower()
    finally:
        await runner.cleanup()
