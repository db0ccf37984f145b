"""simulate and doctor against a bridge served in-process on the real broker (the command
line runs in a thread with its own event loop, as it would in its own process)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import sys
from datetime import datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.amqp.topology import declare, subscriber_topology
from bridge.cli import main
from bridge.core.contract import ASN_BOOKED_IN, EVENTS, message_id, routing_key
from tests.conftest import AMQP_URL, API_KEY, AUTH_HEADER, BridgeFactory, BrokerProbe

CONTRACT_HEADERS = {"x-event", "x-received-at", "x-request-id"}
MINTSOFT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?$")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


async def run(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


@pytest.mark.parametrize("event", EVENTS)
async def test_simulate_puts_a_contract_message_in_a_bound_queue(
    event: str,
    make_bridge: BridgeFactory,
    probe: BrokerProbe,
    exchange: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge = await make_bridge()
    queue = await probe.bind_queue(exchange, routing_key(event))
    code = await run("simulate", event, "--url", bridge.url, "--order-id", "4242")
    out = capsys.readouterr()
    # No credential configured: the bridge refuses, and simulate says how to fix it.
    assert code == 1 and "401" in out.out and "BRIDGE_API_KEYS" in out.err

    monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)
    code = await run("simulate", event, "--url", bridge.url, "--order-id", "4242")
    out = capsys.readouterr()
    assert code == 0, out
    printed = re.search(r": 200 accepted message_id=([0-9a-f]{32})", out.out)
    assert printed, out.out
    [message] = await probe.get_all(queue, expected=1)
    document = json.loads(message.body)
    assert message.header.properties.message_id == printed.group(1)
    assert message.header.properties.message_id == message_id(event, message.body)
    headers = message.header.properties.headers or {}
    id_header = "x-asn-id" if event == ASN_BOOKED_IN else "x-order-id"
    assert set(headers) >= CONTRACT_HEADERS | {id_header}
    assert headers["x-event"] == event and headers[id_header] == "4242"
    # Timestamps are fresh, in Mintsoft's format (no offset): the latest is about now.
    first = document[0] if isinstance(document, list) else document
    assert MINTSOFT_TIME.match(first["LastUpdated"])
    stamps = re.findall(rb'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?"', message.body)
    latest = max(datetime.fromisoformat(s.decode()) for s in stamps)
    assert abs((datetime.now() - latest).total_seconds()) < 120
    assert API_KEY not in out.out + out.err


async def test_simulate_burst_uses_distinct_orders_and_summarises(
    make_bridge: BridgeFactory,
    probe: BrokerProbe,
    exchange: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_AUTH_HEADERS", AUTH_HEADER)
    bridge = await make_bridge()
    queue = await probe.bind_queue(exchange, routing_key("split"))
    code = await run(
        "simulate",
        "split",
        "--url",
        bridge.url,
        "--count",
        "6",
        "--rate",
        "200",
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "sent 6" in out and "6 answered 200" in out
    messages = await probe.get_all(queue, expected=6)
    orders = {m.header.properties.headers["x-order-id"] for m in messages}
    splits = {m.header.properties.headers["x-split-order-id"] for m in messages}
    assert len(messages) == 6 and len(orders) == 6 and not orders & splits


@pytest.mark.parametrize("event", ["despatched", "cancelled", "split", ASN_BOOKED_IN])
async def test_simulate_client_and_warehouse_ids_reach_the_body_and_headers(
    event: str,
    make_bridge: BridgeFactory,
    probe: BrokerProbe,
    exchange: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)
    bridge = await make_bridge()
    queue = await probe.bind_queue(exchange, routing_key(event))
    args = ["simulate", event, "--url", bridge.url, "--client-id", "77", "--warehouse-id", "9"]
    assert await run(*args) == 0
    [message] = await probe.get_all(queue, expected=1)
    headers = message.header.properties.headers or {}
    assert (headers["x-client-id"], headers["x-warehouse-id"]) == ("77", "9")
    # Every ClientId / WarehouseId of the body moved (a split's two parts, a channel ...).
    assert b'"ClientId":12' not in message.body and b'"ClientId":77' in message.body
    assert b'"WarehouseId":9' in message.body
    assert re.findall(rb'"WarehouseId":(\d+)', message.body) == [b"9"] * len(
        re.findall(rb'"WarehouseId":', message.body)
    )


async def test_simulate_client_id_tries_a_subscribers_filter(
    make_bridge: BridgeFactory, probe: BrokerProbe, exchange: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)
    bridge = await make_bridge()
    name = f"test-filter-{os.urandom(4).hex()}"
    topology = subscriber_topology(exchange, name, ("despatched",), (1000,), clients=("77",))
    probe.track(
        queues=tuple(q.name for q in topology.queues),
        exchanges=tuple(e.name for e in topology.exchanges),
    )
    assert probe.channel is not None
    await declare(probe.channel, topology)
    for client in ("12", "77", "13"):
        assert await run("simulate", "despatched", "--url", bridge.url, "--client-id", client) == 0
    # Each was confirmed (so routed) before simulate answered: all that passed are there.
    [message] = await probe.get_all(name, expected=1)
    assert (message.header.properties.headers or {})["x-client-id"] == "77"


def test_simulate_refuses_ids_with_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "despatched", "--file", "x.json", "--client-id", "3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--file" in err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_doctor_reports_a_stopped_broker_with_the_fix(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_API_KEY", "typo-of-api-keys")
    port = _closed_port()
    monkeypatch.setenv("BRIDGE_AMQP_URL", f"amqp://guest:guest@127.0.0.1:{port}/")
    monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)
    code = main(["doctor", "--public-url", f"http://127.0.0.1:{_closed_port()}"])
    out = capsys.readouterr().out
    assert code == 1
    [line] = [x for x in out.splitlines() if "broker reachable" in x]
    assert line.startswith("FAIL") and f"127.0.0.1:{port}" in line
    assert "fix: start RabbitMQ" in line and "guest:guest" not in line
    assert re.search(r"^SKIP exchange and queues", out, re.M)
    assert re.search(
        r"^FAIL variable BRIDGE_API_KEY: .* fix: rename it to BRIDGE_API_KEYS$", out, re.M
    )


async def test_doctor_reports_a_wrong_key_with_the_fix(
    make_bridge: BridgeFactory,
    probe: BrokerProbe,
    exchange: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge = await make_bridge()
    monkeypatch.setenv("BRIDGE_AMQP_URL", AMQP_URL)
    common = ["--exchange", exchange, "--public-url", bridge.url]
    common += ["--archive", "false"]  # as the bridge under test runs
    monkeypatch.setenv("BRIDGE_API_KEYS", "not-the-key")
    code = await run("doctor", *common)
    out = capsys.readouterr().out
    assert code == 1
    lines = [x for x in out.splitlines() if "webhook accepted" in x]
    assert len(lines) == 2  # the order's and the ASN's
    for line in lines:
        assert line.startswith("FAIL") and "401" in line
        assert "fix: set BRIDGE_API_KEYS" in line and "not-the-key" not in out
    assert re.search(r"^OK +broker reachable", out, re.M)
    assert re.search(r"^OK +bridge answers", out, re.M)

    monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)
    code = await run("doctor", *common)
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"^OK +webhook accepted and queued: message [0-9a-f]{32} reached", out, re.M)
    assert re.search(r"^OK +ASN webhook accepted and queued: message [0-9a-f]{32}", out, re.M)
    assert out.rstrip().endswith("all checks passed")


async def test_simulate_never_prints_the_key_from_a_network_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A "bridge" that redirects for ever: aiohttp's error quotes the URL, ?APIKEY= included.
    async def loop_back(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.url))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", loop_back)
    server = TestServer(app)
    await server.start_server()
    try:
        key = "qk-SECRET-5f1a"
        monkeypatch.setenv("BRIDGE_API_KEYS", key)
        code = await run("simulate", "despatched", "--url", str(server.make_url("")))
    finally:
        await server.close()
    out = capsys.readouterr()
    assert code == 1
    assert "no answer" in out.out
    assert key not in out.out + out.err
    assert "APIKEY=***" in out.out  # the URL is still shown, without its key


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_a_burst_shows_a_progress_bar_and_the_summary_and_lines_only_when_verbose(
    make_bridge: BridgeFactory,
    probe: BrokerProbe,
    exchange: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)
    bridge = await make_bridge()
    await probe.bind_queue(exchange, routing_key("despatched"))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code = await run("simulate", "despatched", "--url", bridge.url, "--count", "12")
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("\n") == 1 and out.startswith("sent 12 in "), out
    assert "12/12  ok 12  failed 0" in terminal.getvalue()

    monkeypatch.setattr(sys, "stderr", _Terminal())
    code = await run("simulate", "despatched", "--url", bridge.url, "--count", "5", "--verbose")
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == 6 and all(": 200 accepted message_id=" in x for x in lines[:5])
    assert lines[5].startswith("sent 5 in ")
