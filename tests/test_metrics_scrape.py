"""After real traffic, a scrape of the running processes shows every metric the code
registers: the list comes from the code itself (tests/support/metric_names.py), so a
metric added later is checked without touching this test. Each process shows only the
families it owns (bridge.core.metrics.OWNERS), never another process's at 0.

The traffic: webhooks of each kind to ``serve``; a ``worker`` whose subscribers ack
(the demo log handler), fail until dead-lettered, and forward to a closed port; a ``sync``
pass against the sandbox Mintsoft."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bridge.amqp.topology import ArchiveRetention, receiver_topology, subscriber_topology
from bridge.core.metrics import OWNERS
from bridge.worker.message import Message
from tests.conftest import AMQP_URL, delete_declared, fixture_body
from tests.support.metric_names import exported_families, sample_name
from tests.support.processes import bridge_process, http
from tests.support.rabbit_node import free_port

KEY = "metrics-key-5b1d"


async def always_fail(message: Message) -> None:
    """Handler of the failing subscriber: retried once, then dead-lettered."""
    raise RuntimeError("failing on purpose")


def _samples(text: str, totals: dict[str, float]) -> set[str]:
    """Names of the samples in ``text``; their values summed into ``totals`` by name (and
    by name/outcome for the worker's counter)."""
    names = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            key = sample.name
            if "outcome" in sample.labels:
                key += "/" + sample.labels["outcome"]
            totals[key] = totals.get(key, 0) + sample.value
    return names


def _drive_receiver(base: str) -> None:
    """One of each answer the receiver gives while the broker is up."""
    body = fixture_body("despatched")
    assert http(f"{base}/webhooks/despatched?APIKEY={KEY}", body)[0] == 200
    assert http(f"{base}/webhooks/cancelled?APIKEY={KEY}", fixture_body("cancelled"))[0] == 200
    assert http(f"{base}/webhooks/despatched?APIKEY={KEY}", b"{not json")[0] == 400
    assert http(f"{base}/webhooks/despatched?APIKEY=wrong", body)[0] == 401


def _subscribers(prefix: str) -> dict[str, str]:
    """Name -> the rest of its [[subscriber]] table."""
    return {
        f"{prefix}-log": 'handler = "bridge.examples.log_events:log_event"',
        f"{prefix}-fail": f'handler = "{__name__}:always_fail"\nin_process_tries = 1',
        f"{prefix}-forward": f'forward_url = "http://127.0.0.1:{free_port()}/closed"',
    }


def _missing(families: dict[str, str], seen: set[str]) -> list[str]:
    return sorted(name for name, kind in families.items() if sample_name(name, kind) not in seen)


def test_every_metric_family_has_an_owning_process() -> None:
    owned = tuple(p for prefixes in OWNERS.values() for p in prefixes)
    orphans = [name for name in exported_families() if not name.startswith(owned)]
    assert not orphans, f"add these to bridge.core.metrics.OWNERS: {orphans}"


def _families(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text) if f.name.startswith("bridge_")}


def _owned_only(process: str, text: str) -> None:
    others = {f for f in _families(text) if not f.startswith(OWNERS[process])}
    assert not others, f"{process} exports families it does not own: {sorted(others)}"


def test_every_exported_metric_is_scraped_after_traffic(tmp_path: Path) -> None:
    families = exported_families()
    port, worker_port, sync_port, sandbox_port = free_port(), free_port(), free_port(), free_port()
    ledger_port = free_port()
    exchange = f"test.metrics.{os.getpid()}.{port}"
    subscribers = _subscribers(f"test-metrics-{port}")
    config = tmp_path / "subscribers.toml"
    config.write_text(
        "".join(
            f'[[subscriber]]\nname = "{name}"\nevents = ["*"]\nretry_delays = ["100ms"]\n{rest}\n'
            for name, rest in subscribers.items()
        )
    )
    env = {
        "BRIDGE_API_KEYS": KEY,
        "BRIDGE_PORT": str(port),
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "BRIDGE_MINTSOFT_URL": f"http://127.0.0.1:{sandbox_port}",
        "BRIDGE_MINTSOFT_API_KEY": "sandbox-key",
        "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BRIDGE_SYNC_STATE_PATH": str(tmp_path / "sync.sqlite3"),
        "BRIDGE_SYNC_INTERVAL": "0.5s",
        "BRIDGE_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
    }
    base, worker_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{worker_port}"
    sync_base = f"http://127.0.0.1:{sync_port}"
    ledger_base = f"http://127.0.0.1:{ledger_port}"
    sandbox = ["sandbox", "--port", str(sandbox_port), "--orders", "1", "--step", "1s"]
    topology = receiver_topology(exchange, ArchiveRetention())  # serve and worker: archive on
    for name in subscribers:
        topology = topology + subscriber_topology(exchange, name, ("*",), (100,))
    seen: set[str] = set()
    totals: dict[str, float] = {}
    try:
        with (
            bridge_process(
                ["worker", "--config", str(config), "--metrics-port", str(worker_port)],
                env,
                worker_base + "/healthz",
            ),
            bridge_process(["serve"], env, base + "/healthz"),
            bridge_process(sandbox, env, env["BRIDGE_MINTSOFT_URL"] + "/"),
            bridge_process(["sync", "--metrics-port", str(sync_port)], env, sync_base + "/healthz"),
            bridge_process(
                ["ledger", "--config", str(config), "--metrics-port", str(ledger_port)],
                env,
                ledger_base + "/healthz",
            ),
        ):
            time.sleep(0.5)  # the worker's consumers start in the background
            _drive_receiver(base)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                totals.clear()
                for process, url in (
                    ("serve", base),
                    ("worker", worker_base),
                    ("sync", sync_base),
                    ("ledger", ledger_base),
                ):
                    status, text = http(url + "/metrics")
                    assert status == 200
                    _owned_only(process, text.decode())
                    seen |= _samples(text.decode(), totals)
                if (
                    totals.get("bridge_worker_messages_total/dead_lettered", 0) > 0
                    and totals.get("bridge_sync_enrolled_total", 0) > 0
                    and "bridge_undelivered_oldest_seconds" in seen
                ):
                    break
                time.sleep(0.2)
    finally:
        delete_declared(
            AMQP_URL,
            (*(q.name for q in topology.queues), exchange + ".deliveries"),
            tuple(e.name for e in topology.exchanges),
        )
    missing = _missing(families, seen)
    assert not missing, f"registered but never scraped after traffic: {missing}"
    # The traffic moved the counters, not only created them: every worker outcome included.
    for name in (
        "bridge_webhooks_total",
        "bridge_publish_total",
        "bridge_publish_seconds_count",
        "bridge_sync_enrolled_total",
    ):
        assert totals.get(name, 0) > 0, name
    for outcome in ("consumed", "acked", "retried", "dead_lettered"):
        assert totals.get(f"bridge_worker_messages_total/{outcome}", 0) > 0, outcome
