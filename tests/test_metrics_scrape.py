"""After real traffic, a scrape of the running processes shows every metric the code
registers: the list comes from the code itself (tests/support/metric_names.py), so a
metric added later is checked without touching this test."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AMQP_URL, delete_declared, fixture_body, receiver_names
from tests.support.metric_names import exported_families, sample_name
from tests.support.processes import bridge_process, http
from tests.support.rabbit_node import free_port

KEY = "metrics-key-5b1d"


def _samples(text: str) -> set[str]:
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def _drive_receiver(base: str) -> None:
    """One of each answer the receiver gives while the broker is up."""
    body = fixture_body("despatched")
    assert http(f"{base}/webhooks/despatched?APIKEY={KEY}", body)[0] == 200
    assert http(f"{base}/webhooks/cancelled?APIKEY={KEY}", fixture_body("cancelled"))[0] == 200
    assert http(f"{base}/webhooks/despatched?APIKEY={KEY}", b"{not json")[0] == 400
    assert http(f"{base}/webhooks/despatched?APIKEY=wrong", body)[0] == 401


def test_every_exported_metric_is_scraped_after_traffic(tmp_path: Path) -> None:
    families = exported_families()
    port = free_port()
    exchange = f"test.metrics.{os.getpid()}.{port}"
    env = {
        "BRIDGE_API_KEYS": KEY,
        "BRIDGE_PORT": str(port),
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
    }
    base = f"http://127.0.0.1:{port}"
    seen: set[str] = set()
    try:
        with bridge_process(["serve"], env, base + "/healthz"):
            _drive_receiver(base)
            status, text = http(base + "/metrics")
            assert status == 200
            seen |= _samples(text.decode())
    finally:
        delete_declared(AMQP_URL, *receiver_names(exchange))
    missing = sorted(name for name, kind in families.items() if sample_name(name, kind) not in seen)
    assert not missing, f"registered but never scraped after traffic: {missing}"
