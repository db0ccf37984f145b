"""Signed forwards (Standard Webhooks, contract section 5): verified on the receiving side
with the ``standardwebhooks`` library, as a target would, through a real worker and broker."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge.cli import main
from bridge.core.settings import SettingsError
from bridge.worker.forwarder import Forwarder
from bridge.worker.signing import load_signer
from bridge.worker.subscribers import parse_subscribers
from tests.conftest import BrokerProbe, fixture_body
from tests.test_forwarder import Target, target  # noqa: F401 (the fixture)
from tests.worker_helpers import publish, running_worker, subscriber, wait_until

VARIABLE = "TEST_ERP_SIGNING_SECRETS"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def non_ascii_body() -> bytes:
    document = orjson.loads(fixture_body("despatched"))
    document["FirstName"] = "Zoë"
    document["LastName"] = "Ångström-Łukasik"
    document["Address1"] = "東京都 1-2 ✓"
    return orjson.dumps(document)


async def test_two_secrets_each_verify_a_forward_of_a_non_ascii_body(
    probe: BrokerProbe,
    exchange: str,
    target: Target,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = new_secret(), new_secret()
    monkeypatch.setenv(VARIABLE, f"{old} {new}")
    await target.start()
    sub = subscriber()
    forwarder = Forwarder(sub.name, target.url, timeout=5, signer=load_signer(VARIABLE, sub.name))
    body = non_ascii_body()
    assert not body.isascii()
    async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
        sent = await publish(probe, exchange, "despatched", body)
        await wait_until(lambda: target.requests)
    await forwarder.close()

    [(headers, received)] = target.requests
    assert received == body
    assert headers["webhook-id"] == sent
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert len(headers["webhook-signature"].split(" ")) == 2
    plain = dict(headers)
    # Either secret verifies it on its own: a target can move from the old to the new.
    for secret in (old, new):
        assert Webhook(secret).verify(received, plain) == orjson.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(received, plain)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(received.replace("Zoë".encode(), b"Zoe"), plain)


def test_the_file_form_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = new_secret()
    path = tmp_path / "secrets"
    path.write_text(secret + "\n")
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.setenv(VARIABLE + "_FILE", str(path))
    headers = load_signer(VARIABLE, "erp").headers("abc", b"{}", now=1_700_000_000)
    assert headers["webhook-timestamp"] == "1700000000"
    signed_at = datetime.fromtimestamp(1_700_000_000, UTC)
    assert Webhook(secret).sign("abc", signed_at, b"{}") == headers["webhook-signature"]


@pytest.mark.parametrize(
    "value",
    [
        None,
        "   ",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no whsec_ prefix
        "whsec_not*base64*at*all",
        "whsec_" + base64.b64encode(b"short").decode(),
        new_secret() + " whsec_",
    ],
    # fixed ids: xdist's workers must collect the same names (one value is random)
    ids=["unset", "blank", "no-prefix", "not-base64", "too-short", "one-good-one-empty"],
)
def test_a_missing_or_bad_secret_is_one_line_naming_the_variable_never_the_value(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    monkeypatch.delenv(VARIABLE + "_FILE", raising=False)
    if value is None:
        monkeypatch.delenv(VARIABLE, raising=False)
    else:
        monkeypatch.setenv(VARIABLE, value)
    with pytest.raises(SettingsError) as caught:
        load_signer(VARIABLE, "erp")
    message = str(caught.value)
    assert VARIABLE in message and "\n" not in message
    for part in (value or "").split():
        secret = part.removeprefix("whsec_")
        assert not secret or secret not in message.replace(VARIABLE, "")


def test_the_worker_refuses_to_start_without_its_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.delenv(VARIABLE + "_FILE", raising=False)
    config = tmp_path / "subscribers.toml"
    config.write_text(
        '[[subscriber]]\nname = "erp"\nevents = ["*"]\n'
        f'forward_url = "http://127.0.0.1:9/x"\nsigning_secrets_env = "{VARIABLE}"\n'
    )
    # A broker that is never reached: the secrets are checked before anything connects.
    monkeypatch.setenv("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:9/")
    assert main(["worker", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and VARIABLE in err and "signing_secrets_env" in err


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"handler": "m:f", "signing_secrets_env": "X"}, "forward_url"),
        ({"forward_url": "http://x/y", "signing_secrets_env": "whsec_abc+/="}, "variable name"),
    ],
)
def test_signing_secrets_env_is_checked_in_the_file(table: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_subscribers({"subscriber": [{"name": "erp", "events": ["*"], **table}]})
    assert named in str(caught.value) and "whsec_abc" not in str(caught.value)
