"""What listens where: with ``BRIDGE_METRICS_PORT`` set, ``/metrics`` is served on
``BRIDGE_METRICS_HOST`` (127.0.0.1 by default) and not on the webhook port; unset, it stays
on the webhook port. No answer names the server's software versions."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bridge import cli
from bridge.amqp.topology import subscriber_topology
from bridge.cli import build_parser
from bridge.cli.common import settings_of
from bridge.core.listeners import DEFAULT_METRICS_HOST, SERVER_HEADER, metrics_address
from bridge.core.settings import SettingsError, load_settings
from tests.conftest import (
    AMQP_URL,
    API_KEY,
    BridgeFactory,
    delete_declared,
    fixture_body,
    receiver_names,
)
from tests.support.processes import bridge_process
from tests.support.rabbit_node import free_port


def _get(url: str, body: bytes | None = None) -> tuple[int, str, bytes]:
    """Status, ``Server`` header and body of a GET (a POST with ``body``)."""
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.headers.get("Server", ""), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.headers.get("Server", ""), error.read()


def _raw_server_header(port: int, request: bytes) -> str:
    """The ``Server`` header of the answer to a raw request (one aiohttp cannot parse)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), lines
    return next((v.strip() for k, _, v in (h.partition(":") for h in lines) if k == "Server"), "")


def test_metrics_settings_default_to_no_separate_listener_on_loopback() -> None:
    s = load_settings({})
    assert s.metrics_port is None and s.metrics_host == DEFAULT_METRICS_HOST == "127.0.0.1"
    s = load_settings({"BRIDGE_METRICS_HOST": "0.0.0.0", "BRIDGE_METRICS_PORT": "9100"})
    assert (s.metrics_host, s.metrics_port) == ("0.0.0.0", 9100)
    assert load_settings({"BRIDGE_METRICS_PORT": "0"}).metrics_port is None  # 0: off, as before
    for bad in ("70000", "nine", "-1"):
        with pytest.raises(SettingsError, match="BRIDGE_METRICS_PORT"):
            load_settings({"BRIDGE_METRICS_PORT": bad})


def test_the_worker_takes_the_same_setting_and_keeps_its_metrics_port_flag() -> None:
    args = build_parser().parse_args(["worker", "--config", "x.toml", "--metrics-port", "9100"])
    settings = settings_of(args)
    assert settings.metrics_port == 9100
    # BRIDGE_METRICS_HOST defaults to 127.0.0.1 (contract section 2), whatever BRIDGE_HOST is:
    # a worker on BRIDGE_HOST=0.0.0.0 does not expose its metrics to the network by default.
    assert metrics_address(settings) == ("127.0.0.1", 9100)
    env = {"BRIDGE_HOST": "0.0.0.0", "BRIDGE_METRICS_PORT": "9101"}
    assert metrics_address(load_settings(env)) == ("127.0.0.1", 9101)
    env["BRIDGE_METRICS_HOST"] = "127.0.0.2"
    assert metrics_address(load_settings(env)) == ("127.0.0.2", 9101)
    assert metrics_address(load_settings({})) is None


def test_serve_with_a_metrics_port_keeps_metrics_off_the_webhook_port(
    exchange: str, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    base, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    env = {
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_PORT": str(port),
        "BRIDGE_METRICS_PORT": str(metrics_port),
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_SPOOL_PATH": "",
    }
    queues, exchanges = receiver_names(exchange)
    try:
        with bridge_process(["serve"], env, base + "/readyz"):
            answers = {
                "webhook": _get(
                    f"{base}/webhooks/despatched?APIKEY={API_KEY}", fixture_body("despatched")
                ),
                "unauthorized": _get(f"{base}/webhooks/despatched?APIKEY=no", b"{}"),
                "healthz": _get(base + "/healthz"),
                "metrics on the webhook port": _get(base + "/metrics"),
                "metrics": _get(metrics + "/metrics"),
                "healthz on the metrics port": _get(metrics + "/healthz"),
                "unknown on the metrics port": _get(metrics + "/webhooks/despatched"),
            }
            unparsable = [
                _raw_server_header(p, raw)
                for p in (port, metrics_port)
                for raw in (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n")
            ]
    finally:
        delete_declared(AMQP_URL, queues, exchanges)
    codes = {name: status for name, (status, _, _) in answers.items()}
    assert codes == {
        "webhook": 200,
        "unauthorized": 401,
        "healthz": 200,
        "metrics on the webhook port": 404,
        "metrics": 200,
        "healthz on the metrics port": 200,
        "unknown on the metrics port": 404,
    }
    assert b"bridge_webhooks_total" in answers["metrics"][2]
    assert b"bridge_webhooks_total" not in answers["metrics on the webhook port"][2]
    servers = {server for _, server, _ in answers.values()} | set(unparsable)
    assert servers == {SERVER_HEADER}, servers


async def test_without_a_metrics_port_metrics_stay_on_the_webhook_port(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge()
    response = await bridge.client.get("/metrics")
    assert response.status == 200
    assert "bridge_webhooks_total" in await response.text()
    assert response.headers["Server"] == SERVER_HEADER


async def test_with_a_metrics_port_the_webhook_app_has_no_metrics_route(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(metrics_port=free_port())
    response = await bridge.client.get("/metrics")
    assert response.status == 404
    assert response.headers["Server"] == SERVER_HEADER
    assert (await bridge.client.get("/healthz")).status == 200


def test_a_metrics_port_in_use_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)
        monkeypatch.setenv("BRIDGE_PORT", str(free_port()))
        monkeypatch.setenv("BRIDGE_METRICS_PORT", str(taken.getsockname()[1]))
        monkeypatch.setenv("BRIDGE_SPOOL_PATH", "")
        code = cli.main(["serve"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "BRIDGE_METRICS_PORT" in err and len(err.strip().splitlines()) == 1


def test_a_metrics_port_equal_to_the_webhook_port_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(free_port())
    monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)
    monkeypatch.setenv("BRIDGE_PORT", port)
    monkeypatch.setenv("BRIDGE_METRICS_PORT", port)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "BRIDGE_METRICS_PORT" in err and len(err.strip().splitlines()) == 1


def test_the_worker_serves_metrics_on_bridge_metrics_port(exchange: str, tmp_path: Path) -> None:
    name = f"test-ports-{free_port()}"
    config = tmp_path / "subscribers.toml"
    config.write_text(
        f'[[subscriber]]\nname = "{name}"\nevents = ["*"]\n'
        'handler = "bridge.examples.log_events:log_event"\nretry_delays = ["1s"]\n'
    )
    port = free_port()
    env = {
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_METRICS_PORT": str(port),
    }
    topology = subscriber_topology(exchange, name, ("*",), (1000,))
    try:
        with bridge_process(
            ["worker", "--config", str(config)], env, f"http://127.0.0.1:{port}/healthz"
        ):
            status, server, text = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        queues, exchanges = receiver_names(exchange)  # the worker declares them too
        delete_declared(
            AMQP_URL,
            queues + tuple(q.name for q in topology.queues),
            exchanges + tuple(e.name for e in topology.exchanges),
        )
    assert status == 200 and server == SERVER_HEADER
    assert b"bridge_" in text
