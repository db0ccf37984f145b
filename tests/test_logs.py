"""Secrets never reach the logs: a real ``serve`` process, credentials in the query and in
the header, both log formats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import AMQP_URL, delete_declared, fixture_body, receiver_names
from tests.support.rabbit_node import free_port

KEY = "qk-7f3e9a1c55"
HEADER = "Basic c2VjcmV0LXVzZXI6czNjcjN0"


def _post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url, data=fixture_body("despatched"), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_keys_and_authorization_values_never_appear_in_logs(log_format: str) -> None:
    port = free_port()
    exchange = f"test.logs.{os.getpid()}.{port}"
    env = {
        **os.environ,
        "BRIDGE_API_KEYS": KEY,
        "BRIDGE_AUTH_HEADERS": HEADER,
        "BRIDGE_PORT": str(port),
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_LOG_FORMAT": log_format,
        "BRIDGE_SPOOL_PATH": "",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        assert _post(f"{base}/webhooks/despatched?APIKEY={KEY}", {}) == 200
        assert _post(f"{base}/webhooks/despatched?apikey={KEY}x", {}) == 401
        assert _post(f"{base}/webhooks/despatched", {"Authorization": HEADER}) == 200
        assert _post(f"{base}/webhooks/despatched", {"Authorization": HEADER + "x"}) == 401
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert KEY not in metrics and "c2VjcmV0" not in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        delete_declared(AMQP_URL, *receiver_names(exchange))
    assert "/webhooks/despatched" in output, output  # the access log did log the requests
    assert " 401 " in output or '"status":401' in output
    assert KEY not in output
    assert "c2VjcmV0" not in output
    assert process.returncode == 0
