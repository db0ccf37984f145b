"""connect-actions against a fake Mintsoft API: the exact request, key refresh, retries,
error messages, bulk registration, and the refusals that keep a broken callback out."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli import main
from tests.support.docs import page
from tests.support.fake_mintsoft import FakeMintsoft, Scripted

MS_KEY = "ms-key-7d1c2a"
PUBLIC = "https://bridge.example.com"
BRIDGE_KEY = "bridge-key-41f0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the settings a test sets: none inherited from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def mintsoft(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMintsoft]:
    fake = FakeMintsoft()
    fake.start()
    monkeypatch.setenv("BRIDGE_MINTSOFT_URL", fake.url)
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("BRIDGE_API_KEYS", f"{BRIDGE_KEY},older-key")
    yield fake
    fake.stop()


@pytest.fixture
def with_key(mintsoft: FakeMintsoft, monkeypatch: pytest.MonkeyPatch) -> FakeMintsoft:
    monkeypatch.setenv("BRIDGE_MINTSOFT_API_KEY", MS_KEY)
    mintsoft.valid_keys = {MS_KEY}
    return mintsoft


def expected_body(source: str | None, query: str = f"?APIKEY={BRIDGE_KEY}") -> dict[str, object]:
    return {
        "Type": "API",
        "SourceOrderId": source,
        "Complete": False,
        "ExtraCode1": f"{PUBLIC}/webhooks/despatched{query}",
        "ExtraCode2": f"{PUBLIC}/webhooks/cancelled{query}",
        "ExtraCode3": f"{PUBLIC}/webhooks/delivered{query}",
        "ExtraCode5": f"{PUBLIC}/webhooks/split{query}",
    }


def test_registers_the_contract_body_with_the_key_header(
    with_key: FakeMintsoft, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["connect-actions", "20285", "--source-order-id", "202-0672909-5683525"])
    assert code == 0, capsys.readouterr().err
    [request] = with_key.requests
    assert (request.method, request.path) == ("PUT", "/api/Order/20285/ConnectActions")
    assert request.headers["ms-apikey"] == MS_KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == expected_body("202-0672909-5683525")
    out = capsys.readouterr()
    assert "order 20285" in out.out
    assert MS_KEY not in out.out + out.err and BRIDGE_KEY not in out.out + out.err


def test_authorization_value_goes_to_extracode4_and_events_select_fields(
    with_key: FakeMintsoft, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_AUTH_HEADERS", "Basic dXNlcm5hbWU6cGFzc3dvcmQ=")
    assert main(["connect-actions", "7", "--events", "split,despatched"]) == 0
    [request] = with_key.requests
    assert request.body == {
        "Type": "API",
        "SourceOrderId": None,
        "Complete": False,
        "ExtraCode1": f"{PUBLIC}/webhooks/despatched",
        "ExtraCode4": "Basic dXNlcm5hbWU6cGFzc3dvcmQ=",
        "ExtraCode5": f"{PUBLIC}/webhooks/split",
    }


def test_dry_run_prints_the_json_and_sends_nothing(
    mintsoft: FakeMintsoft, capsys: pytest.CaptureFixture[str]
) -> None:
    # No Mintsoft credential is needed to look.
    assert main(["connect-actions", "20285", "--source-order-id", "S-1", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == expected_body("S-1")
    assert mintsoft.requests == []


def test_print_create_order_prints_the_connect_action_block(
    mintsoft: FakeMintsoft, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["connect-actions", "--print-create-order", "--source-order-id", "S-9"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ConnectAction": expected_body("S-9")}
    assert mintsoft.requests == []


def test_login_then_a_401_fetches_a_new_key_once(
    mintsoft: FakeMintsoft, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_MINTSOFT_USERNAME", mintsoft.username)
    monkeypatch.setenv("BRIDGE_MINTSOFT_PASSWORD", mintsoft.password)
    mintsoft.issued_keys.extend(["expired-key", "fresh-key"])
    mintsoft.valid_keys = {"fresh-key"}
    assert main(["connect-actions", "20285"]) == 0, capsys.readouterr().err
    calls = [(r.method, r.path, r.headers.get("ms-apikey")) for r in mintsoft.requests]
    assert calls == [
        ("POST", "/api/Auth", None),
        ("PUT", "/api/Order/20285/ConnectActions", "expired-key"),
        ("POST", "/api/Auth", None),
        ("PUT", "/api/Order/20285/ConnectActions", "fresh-key"),
    ]
    assert mintsoft.requests[0].body == {"Username": mintsoft.username, "Password": "s3cret-pw"}
    err = capsys.readouterr().err
    assert "s3cret-pw" not in err and "fresh-key" not in err


def test_a_refused_static_key_is_not_retried_and_says_the_fix(
    with_key: FakeMintsoft, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with_key.valid_keys = {"another-key"}
    assert main(["connect-actions", "20285"]) == 1
    assert len(with_key.requests) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "401" in err and "BRIDGE_MINTSOFT_API_KEY" in err and MS_KEY not in err


def test_a_refused_login_names_the_settings(
    mintsoft: FakeMintsoft, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_MINTSOFT_USERNAME", mintsoft.username)
    monkeypatch.setenv("BRIDGE_MINTSOFT_PASSWORD", "wrong")
    assert main(["connect-actions", "20285"]) == 1
    err = capsys.readouterr().err
    assert "BRIDGE_MINTSOFT_PASSWORD" in err and "wrong" not in err.replace("'wrong'", "")
    assert [r.path for r in mintsoft.requests] == ["/api/Auth"]


def test_429_and_503_are_retried_after_what_retry_after_asks(
    with_key: FakeMintsoft, capsys: pytest.CaptureFixture[str]
) -> None:
    with_key.script.extend(
        [
            Scripted(429, {"Message": "Too many requests"}, {"Retry-After": "1"}),
            Scripted(503, {"Message": "Service Unavailable"}, {"Retry-After": "0"}),
        ]
    )
    assert main(["connect-actions", "20285"]) == 0, capsys.readouterr().err
    puts = with_key.of("PUT")
    assert len(puts) == 3
    assert all(r.body == expected_body(None) for r in puts)
    # Retry-After: 1 was waited before the second attempt.
    assert puts[1].at - puts[0].at >= 0.9


def test_retries_are_bounded_and_the_error_says_what_mintsoft_answered(
    with_key: FakeMintsoft, capsys: pytest.CaptureFixture[str]
) -> None:
    with_key.script.extend(
        Scripted(503, {"Message": "Down for maintenance"}, {"Retry-After": "0"}) for _ in range(9)
    )
    assert main(["connect-actions", "20285"]) == 1
    # docs/mintsoft.md: "retried up to 4 times", i.e. 5 requests in all.
    assert "retried up to 4 times" in " ".join(page("mintsoft.md").split())
    assert len(with_key.of("PUT")) == 5
    err = capsys.readouterr().err
    assert "503" in err and "Down for maintenance" in err and "5 attempts" in err


def test_a_long_retry_after_gives_up_at_once(
    with_key: FakeMintsoft, capsys: pytest.CaptureFixture[str]
) -> None:
    with_key.script.append(Scripted(429, {"Message": "Slow down"}, {"Retry-After": "3600"}))
    assert main(["connect-actions", "20285"]) == 1
    assert len(with_key.requests) == 1
    assert "3600 s" in capsys.readouterr().err


def test_400_is_reported_with_mintsofts_message_and_never_the_key(
    with_key: FakeMintsoft, capsys: pytest.CaptureFixture[str]
) -> None:
    with_key.refuse[20285] = Scripted(
        400,
        {
            "Message": f"The request is invalid. Key {MS_KEY} may not edit order 20285",
            "ModelState": {"SourceOrderId": ["must be unique"]},
        },
    )
    assert main(["connect-actions", "20285"]) == 1
    assert len(with_key.requests) == 1  # a 400 is not retried
    err = capsys.readouterr().err.strip()
    assert err == (
        "mintsoft-bridge connect-actions: Mintsoft answered PUT /api/Order/20285/ConnectActions "
        "with 400: The request is invalid. Key *** may not edit order 20285"
    )


def test_bulk_from_a_csv_registers_each_order_and_summarises(
    with_key: FakeMintsoft, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text("OrderId,SourceOrderId\n101,A-101\n102,A-102\n\n# skipped\n103\n104,A-104\n")
    with_key.refuse[103] = Scripted(400, {"Message": "Order not found"})
    assert main(["connect-actions", "--from-file", str(orders)]) == 1
    sent = {int(r.path.split("/")[3]): r.body for r in with_key.of("PUT")}
    assert sent == {
        101: expected_body("A-101"),
        102: expected_body("A-102"),
        103: expected_body(None),
        104: expected_body("A-104"),
    }
    out = capsys.readouterr().out
    assert "registered on 3 of 4 orders" in out and "1 failed" in out
    assert (
        "order 103: Mintsoft answered PUT /api/Order/103/ConnectActions with 400: Order not found"
        in out
    )


def test_bulk_of_plain_ids_all_registered_exits_0(
    with_key: FakeMintsoft, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = tmp_path / "orders.txt"
    orders.write_text("201\n202\n203\n")
    assert main(["connect-actions", "--from-file", str(orders)]) == 0
    assert sorted(r.path for r in with_key.of("PUT")) == [
        f"/api/Order/{n}/ConnectActions" for n in (201, 202, 203)
    ]
    assert "registered on 3 of 3 orders" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"BRIDGE_PUBLIC_URL": "http://bridge.example.com"}, ["1"], "is not https"),
        ({"BRIDGE_PUBLIC_URL": PUBLIC + "/" + "p" * 230}, ["1"], "255"),
        ({"BRIDGE_PUBLIC_URL": ""}, ["1"], "BRIDGE_PUBLIC_URL is not set"),
        ({"BRIDGE_MINTSOFT_URL": "http://mintsoft.example"}, ["1"], "BRIDGE_MINTSOFT_URL"),
        ({"BRIDGE_MINTSOFT_API_KEY": ""}, ["1"], "BRIDGE_MINTSOFT_API_KEY"),
        ({"BRIDGE_API_KEYS": ""}, ["1"], "BRIDGE_API_KEYS"),
        ({}, ["x1"], "not a Mintsoft order id"),
        ({}, ["1", "--events", "shipped"], "shipped"),
        ({}, [], "ORDER_ID"),
    ],
)
def test_refuses_in_one_line_with_exit_2_and_sends_nothing(
    with_key: FakeMintsoft,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    args: list[str],
    named: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["connect-actions", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err
    assert with_key.requests == []


def test_loopback_http_is_accepted(
    with_key: FakeMintsoft, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "http://127.0.0.1:8080")
    assert main(["connect-actions", "5", "--dry-run"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["ExtraCode1"] == f"http://127.0.0.1:8080/webhooks/despatched?APIKEY={BRIDGE_KEY}"


@pytest.mark.parametrize("login", [False, True], ids=["api-key", "login"])
def test_a_redirect_to_another_origin_is_not_followed_with_credentials(
    mintsoft: FakeMintsoft,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    login: bool,
) -> None:
    """A 307 to another local port: nothing reaches it (no ms-apikey, no password, no
    body), and the one line names the status and the other origin, never the key."""
    thief = FakeMintsoft()
    thief.start()
    try:
        if login:
            monkeypatch.setenv("BRIDGE_MINTSOFT_USERNAME", mintsoft.username)
            monkeypatch.setenv("BRIDGE_MINTSOFT_PASSWORD", mintsoft.password)
        else:
            monkeypatch.setenv("BRIDGE_MINTSOFT_API_KEY", MS_KEY)
        where = "/api/Auth" if login else "/api/Order/20285/ConnectActions"
        location = f"{thief.url}{where}?key={MS_KEY}"
        mintsoft.script.append(Scripted(307, None, {"Location": location}))
        assert main(["connect-actions", "20285"]) == 1
        assert thief.requests == []
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "307" in err and thief.url in err
        for secret in (MS_KEY, mintsoft.password, BRIDGE_KEY, "?key="):
            assert secret not in err
    finally:
        thief.stop()


def test_an_answer_that_echoes_the_bridges_own_credential_never_shows_it(
    with_key: FakeMintsoft, capsys: pytest.CaptureFixture[str]
) -> None:
    """A connect-action body carries the bridge's own key (in ?APIKEY= or ExtraCode4); a
    Mintsoft error quoting it back is shown, and stored by sync, with the key masked."""
    echoed = f"ExtraCode1 '{PUBLIC}/webhooks/despatched?APIKEY={BRIDGE_KEY}' is not valid"
    with_key.refuse[20285] = Scripted(400, {"Message": echoed})
    assert main(["connect-actions", "20285"]) == 1
    err = capsys.readouterr().err
    assert "is not valid" in err
    assert BRIDGE_KEY not in err and "***" in err


def test_asn_dry_run_prints_the_asn_body_with_the_key_in_the_url(
    mintsoft: FakeMintsoft, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["connect-actions", "--asn", "7", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == {
        "Type": "API",
        "SourceASNId": None,
        "Complete": False,
        "ExtraCode1": f"{PUBLIC}/webhooks/asn-booked-in?APIKEY={BRIDGE_KEY}",
    }
    assert "/api/ASN/7/ConnectActions" in out.err
    assert mintsoft.requests == []


def test_asn_registers_the_booked_in_url_with_the_authorization_value(
    with_key: FakeMintsoft, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_AUTH_HEADERS", "Basic dXNlcm5hbWU6cGFzc3dvcmQ=")
    code = main(["connect-actions", "--asn", "7", "--source-asn-id", "PO-48213"])
    assert code == 0, capsys.readouterr().err
    [request] = with_key.requests
    assert (request.method, request.path) == ("PUT", "/api/ASN/7/ConnectActions")
    assert request.headers["ms-apikey"] == MS_KEY
    assert request.body == {
        "Type": "API",
        "SourceASNId": "PO-48213",
        "Complete": False,
        "ExtraCode1": f"{PUBLIC}/webhooks/asn-booked-in",
        "ExtraCode4": "Basic dXNlcm5hbWU6cGFzc3dvcmQ=",
    }
    assert "ASN 7" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--asn", "x7"], "not a Mintsoft ASN id"),
        (["--asn", "7", "20285"], "ORDER_ID"),
        (["--asn", "7", "--events", "split"], "--events"),
        (["--asn", "7", "--from-file", "f.csv"], "--from-file"),
        (["1", "--source-asn-id", "S"], "--asn"),
    ],
)
def test_asn_refuses_order_options_in_one_line(
    with_key: FakeMintsoft, capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    assert main(["connect-actions", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err
    assert with_key.requests == []
