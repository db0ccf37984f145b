"""Secrets never reach the logs: a real ``serve`` process, credentials in the query and in
the header, both log formats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import AMQP_URL, delete_declared, fixture_body, receiver_names
from tests.support.processes import bridge_process, http
from tests.support.rabbit_node import free_port
from tests.support.serve_process import one_receiver

KEY = "qk-7f3e9a1c55"
HEADER = "Basic c2VjcmV0LXVzZXI6czNjcjN0"


def _post(url: str, headers: dict[str, str]) -> int:
    return http(url, fixture_body("despatched"), headers)[0]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_keys_and_authorization_values_never_appear_in_logs(log_format: str) -> None:
    port = free_port()
    exchange = f"test.logs.{os.getpid()}.{port}"
    env = {
        "BRIDGE_API_KEYS": KEY,
        "BRIDGE_AUTH_HEADERS": HEADER,
        "BRIDGE_PORT": str(port),
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_LOG_FORMAT": log_format,
        "BRIDGE_SPOOL_PATH": "",
    }
    base = f"http://127.0.0.1:{port}"
    try:
        with bridge_process(["serve"], env, base + "/healthz") as running:
            assert _post(f"{base}/webhooks/despatched?APIKEY={KEY}", {}) == 200
            assert _post(f"{base}/webhooks/despatched?apikey={KEY}x", {}) == 401
            assert _post(f"{base}/webhooks/despatched", {"Authorization": HEADER}) == 200
            assert _post(f"{base}/webhooks/despatched", {"Authorization": HEADER + "x"}) == 401
            # A mistyped URL: the key as a path (matrix) parameter, a 404 (issue 22, 14).
            assert _post(f"{base}/webhooks/despatched;APIKEY={KEY}", {}) == 404
            assert _post(f"{base}/webhooks/x;k={KEY};v=1/y", {}) == 404
            metrics = http(base + "/metrics")[1].decode()
            assert KEY not in metrics and "c2VjcmV0" not in metrics
        output = running.stop()
    finally:
        delete_declared(AMQP_URL, *receiver_names(exchange))
    assert "/webhooks/despatched" in output, output  # the access log did log the requests
    assert " 401 " in output or '"status":401' in output
    assert KEY not in output
    assert "c2VjcmV0" not in output
    assert running.process.returncode == 0


def test_json_access_log_line_carries_the_webhook_fields() -> None:
    """One object per line; the webhook's line names its event, request id, message id,
    order id and latency, so one webhook can be followed from the receiver to the worker."""
    port = free_port()
    exchange = f"test.logs.json.{os.getpid()}.{port}"
    env = {
        "BRIDGE_API_KEYS": KEY,
        "BRIDGE_PORT": str(port),
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_SPOOL_PATH": "",
    }
    base = f"http://127.0.0.1:{port}"
    body = fixture_body("despatched")
    try:
        with bridge_process(["serve"], env, base + "/healthz") as running:
            status, answer = http(
                f"{base}/webhooks/despatched?APIKEY={KEY}", body, {"X-Request-Id": "req-7-trace"}
            )
            assert status == 200
            assert http(f"{base}/webhooks/cancelled?APIKEY=nope", body)[0] == 401
        output = running.stop()
    finally:
        delete_declared(AMQP_URL, *receiver_names(exchange))
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert all({"time", "level", "message"} <= line.keys() for line in lines)
    webhooks = [line for line in lines if line.get("path", "").startswith("/webhooks/")]
    accepted = next(line for line in webhooks if line["status"] == 200)
    assert accepted["event"] == "despatched"
    assert accepted["request_id"] == "req-7-trace"
    assert accepted["message_id"] == json.loads(answer)["message_id"]
    assert accepted["order_id"] == str(json.loads(body)["ID"])
    assert isinstance(accepted["latency_ms"], float)
    assert accepted["path"] == "/webhooks/despatched?APIKEY=***"
    refused = next(line for line in webhooks if line["status"] == 401)
    assert refused["event"] == "cancelled" and "message_id" not in refused


class _CountingStream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)


async def test_lines_of_one_loop_turn_leave_in_one_write() -> None:
    from bridge.core.logs import TurnBatchingStreamHandler

    stream = _CountingStream()
    handler = TurnBatchingStreamHandler(stream)
    handler.handle(_record("one"))
    handler.handle(_record("two"))
    assert stream.writes == []
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes == ["one\ntwo\n"]
    handler.handle(_record("three"))
    handler.flush()  # shutdown flushes what is pending
    assert stream.writes == ["one\ntwo\n", "three\n"]


def test_without_a_running_loop_lines_are_written_at_once() -> None:
    from bridge.core.logs import TurnBatchingStreamHandler

    stream = _CountingStream()
    handler = TurnBatchingStreamHandler(stream)
    handler.handle(_record("one"))
    assert stream.writes == ["one\n"]


def _raw(base: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answered before closing."""
    host, port = base.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def _refused_by_the_parser(key: str, header: str) -> list[bytes]:
    """Requests aiohttp's parser refuses, each quoting the key or the header in its error."""
    tail = b"Host: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    target = f"/webhooks/despatched?APIKEY={key}".encode()
    return [
        b"POST " + target + b"&x=\xff HTTP/1.1\r\n" + tail,  # a non-ASCII byte in the query
        b"POST " + target + b" HTTP/1.1\r\nAuthorization: " + header.encode() + b"\x00\r\n" + tail,
        b"POST /webhooks/despatched HTTP/1.1\r\nAuthorization: "
        + header.encode()
        + b"a" * 9000
        + b"\r\n"
        + tail,  # a header over 8 KB
        b"POST " + target + b" x HTTP/1.1\r\n" + tail,  # a raw space in the URL
        b"POST " + target + b" HTTP/9.9\r\n" + tail,
    ]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_requests_the_parser_refuses_log_one_warning_without_the_key(
    log_format: str, tmp_path: Path
) -> None:
    exchange = f"test.logs.refused.{uuid.uuid4().hex[:8]}"
    with one_receiver(
        exchange, KEY, tmp_path, BRIDGE_AUTH_HEADERS=HEADER, BRIDGE_LOG_FORMAT=log_format
    ) as (base, _):
        for _round in range(3):
            for request in _refused_by_the_parser(KEY, HEADER):
                assert _raw(base, request).startswith(b"HTTP/1.0 400"), request[:60]
        assert _post(f"{base}/webhooks/despatched?APIKEY={KEY}", {}) == 200
    output = (tmp_path / "serve.log").read_text()
    assert KEY not in output and "c2VjcmV0" not in output, output
    assert "Traceback" not in output
    assert " ERROR " not in output and '"level":"error"' not in output
    refused = [line for line in output.splitlines() if "not valid HTTP" in line]
    assert len(refused) == 1, output  # 15 refused requests, one line (rate-limited)
    assert "warning" in refused[0].lower()


_LINE_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+: ")
FORGED = "2026-11-30 00:00:00,000 INFO aiohttp.access: POST /forged 200"


def test_control_characters_in_paths_query_names_and_order_ids_are_escaped_in_text_logs(
    tmp_path: Path,
) -> None:
    exchange = f"test.logs.forged.{uuid.uuid4().hex[:8]}"
    hostile = "\n" + FORGED + "\r\x1b[31m\x7f\x85\u2028\x00"
    body = json.dumps({"ID": "20285" + hostile, "OrderNumber": "SO-1"}).encode()
    with one_receiver(exchange, KEY, tmp_path, BRIDGE_LOG_FORMAT="text") as (base, _):
        path = quote("/webhooks/x" + hostile)
        assert http(base + path)[0] == 404
        assert http(f"{base}/healthz{quote(hostile)}")[0] == 404
        name = quote("a" + hostile)
        assert http(f"{base}/webhooks/despatched?APIKEY={KEY}&{name}=1", body)[0] == 200
    output = (tmp_path / "serve.log").read_text()
    lines = output.split("\n")[:-1]
    assert all(_LINE_START.match(line) for line in lines), output
    for raw in ("\r", "\x1b", "\x7f", "\x85", "\u2028", "\x00"):
        assert raw not in output, (raw, output)
    escaped = [line for line in lines if "\\x0a" + FORGED in line]
    assert len(escaped) == 3, output  # two paths; a query name and an order id on one line
    assert any("order_id=20285\\x0a" in line and "&a\\x0a" in line for line in escaped)


def test_a_worker_lines_fields_cannot_forge_a_line_either() -> None:
    """The key=value fields of a worker line (an order id comes from the body) are escaped
    like the message: one record, one line."""
    from bridge.core.logs import TextFormatter

    record = logging.LogRecord(
        "bridge.worker", logging.INFO, "", 0, "despatched delivered", (), None
    )
    record.subscriber = "erp"
    record.order_id = "1\n2026-11-30 12:00:00 ERROR forged \x1b[31m"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    assert "order_id=1\\x0a2026" in line or "order_id=1\\n2026" in line
