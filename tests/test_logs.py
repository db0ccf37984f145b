"""Secrets never reach the logs: a real ``serve`` process, credentials in the query and in
the header, both log formats."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest

from tests.conftest import AMQP_URL, delete_declared, fixture_body, receiver_names
from tests.support.processes import bridge_process, http
from tests.support.rabbit_node import free_port

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
