"""``serve --workers N``: N processes on one port (SO_REUSEPORT), each answering and
publishing on its own broker link, with its own spool and metrics port; a signal to the
parent stops them all; a worker that cannot start stops the others."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from bridge.core.settings import SettingsError, load_settings
from bridge.receiving.workers import check_reuse_port, worker_settings
from tests.conftest import AMQP_URL, API_KEY, delete_declared, fixture_body, receiver_names
from tests.support.processes import http, wait_until_answering
from tests.support.rabbit_node import free_port


def _two_free_ports() -> int:
    """A port whose next one is free too (the second worker's metrics port)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _counter(text: str, name: str, label: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and label in line
    )


def _serve(env: dict[str, str], tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--workers", "2"],
        env={**os.environ, **env},
        stdout=(tmp_path / "serve.log").open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def _env(port: int, metrics: int, exchange: str, tmp_path: Path) -> dict[str, str]:
    return {
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_HOST": "127.0.0.1",
        "BRIDGE_PORT": str(port),
        "BRIDGE_METRICS_PORT": str(metrics),
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_ARCHIVE": "false",
        "BRIDGE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
    }


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_two_workers_answer_and_publish_and_one_signal_stops_both(
    tmp_path: Path, stop_with: signal.Signals
) -> None:
    port, metrics = free_port(), _two_free_ports()
    exchange = f"test.workers.{uuid.uuid4().hex[:8]}"
    parent = _serve(_env(port, metrics, exchange, tmp_path), tmp_path)
    try:
        for metrics_port in (metrics, metrics + 1):
            wait_until_answering(f"http://127.0.0.1:{metrics_port}/healthz", parent)
        wait_until_answering(f"http://127.0.0.1:{port}/readyz", parent)
        workers = _children(parent.pid)
        assert len(workers) == 2, workers
        url = f"http://127.0.0.1:{port}/webhooks/despatched?APIKEY={API_KEY}"
        # A new connection each (urllib does not keep them alive): the kernel spreads them.
        statuses = [http(url, fixture_body("despatched"))[0] for _ in range(40)]
        assert statuses == [200] * 40
        answered, confirmed = [], []
        for metrics_port in (metrics, metrics + 1):
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as answer:
                text = answer.read().decode()
            answered.append(_counter(text, "bridge_webhooks_total", 'code="200"'))
            confirmed.append(_counter(text, "bridge_publish_total", "confirmed"))
        assert sum(answered) == 40 and all(answered), answered  # both answered
        assert confirmed == answered, confirmed  # each published what it answered
        assert (tmp_path / "spool.sqlite3").exists() and (tmp_path / "spool-1.sqlite3").exists()

        parent.send_signal(stop_with)
        assert parent.wait(60) == 0, (tmp_path / "serve.log").read_text()
        deadline = time.monotonic() + 30
        while not all(_gone(pid) for pid in workers):
            assert time.monotonic() < deadline, workers
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        delete_declared(AMQP_URL, *receiver_names(exchange))


def test_a_worker_that_cannot_start_stops_the_others(tmp_path: Path) -> None:
    port, metrics = free_port(), _two_free_ports()
    exchange = f"test.workers.{uuid.uuid4().hex[:8]}"
    with socket.socket() as taken:  # the second worker's metrics port, in use
        taken.bind(("127.0.0.1", metrics + 1))
        taken.listen()
        parent = _serve(_env(port, metrics, exchange, tmp_path), tmp_path)
        try:
            code = parent.wait(60)
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            delete_declared(AMQP_URL, *receiver_names(exchange))
    output = (tmp_path / "serve.log").read_text()
    assert code == 2, output
    assert f"BRIDGE_METRICS_PORT={metrics + 1}: the port is already in use" in output
    assert "Traceback" not in output


def test_without_so_reuseport_workers_are_refused_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_reuse_port(2)  # this machine has it
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(SettingsError, match=r"--workers 2 needs SO_REUSEPORT.*--workers 1"):
        check_reuse_port(2)


def test_each_worker_has_its_own_spool_and_metrics_port() -> None:
    settings = load_settings(
        {"BRIDGE_SPOOL_PATH": "/var/lib/b/spool.sqlite3", "BRIDGE_METRICS_PORT": "9100"}
    )
    first, third = worker_settings(settings, 0), worker_settings(settings, 2)
    assert (first.spool_path, first.metrics_port) == ("/var/lib/b/spool.sqlite3", 9100)
    assert (third.spool_path, third.metrics_port) == ("/var/lib/b/spool-2.sqlite3", 9102)
    assert worker_settings(load_settings({"BRIDGE_SPOOL_PATH": ""}), 1).spool_path == ""
