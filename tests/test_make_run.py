"""``make run``, started as a newcomer would: serve, the demo worker, the ledger and the
console come up on the ports of BRIDGE_PORT / BRIDGE_CONSOLE_PORT, a posted webhook is
handled by the demo worker and indexed by the ledger, the console signs in with the printed
development password, and one Ctrl-C (SIGINT to the terminal's process group) stops all
four."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import AMQP_URL, delete_declared, fixture_body, receiver_names
from tests.support.processes import http

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "make run exited early"
        try:
            if http(url)[0] < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _environment(
    tmp_path: Path, port: int, console_port: int
) -> tuple[dict[str, str], str, str, Path]:
    """make run's environment: the test's own ports, exchange, spool and demo subscriber."""
    exchange = f"test.{uuid.uuid4().hex[:12]}"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BRIDGE_") or key == "BRIDGE_TEST_AMQP_URL"
    }
    env.update(
        BRIDGE_PORT=str(port),
        BRIDGE_CONSOLE_PORT=str(console_port),
        BRIDGE_EXCHANGE=exchange,
        BRIDGE_AMQP_URL=AMQP_URL,
        BRIDGE_SPOOL_PATH=str(tmp_path / "spool.sqlite3"),
        BRIDGE_SYNC_STATE_PATH=str(tmp_path / "sync.sqlite3"),
        BRIDGE_LEDGER_URL=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
    )
    env.pop("MAKEFLAGS", None)
    # The demo subscriber under a name of its own: the broker is shared with other tests.
    demo = f"log-events-{uuid.uuid4().hex[:8]}"
    subscribers = tmp_path / "subscribers.toml"
    example = (ROOT / "deploy" / "subscribers.example.toml").read_text()
    subscribers.write_text(example.replace('name = "log-events"', f'name = "{demo}"'))
    env["SUBSCRIBERS"] = str(subscribers)
    return env, exchange, demo, subscribers


def _state(traced: str, subscriber: str) -> str | None:
    """The state ``trace --json`` gives ``subscriber`` for the order's despatch."""
    for webhook in json.loads(traced)["webhooks"]:
        for sub in webhook["subscribers"]:
            if webhook["event"] == "despatched" and sub["name"] == subscriber:
                return str(sub["state"])
    return None


def _cleanup(exchange: str, demo: str) -> None:
    queues, exchanges = receiver_names(exchange)
    delete_declared(
        AMQP_URL,
        (
            *queues,
            exchange + ".archive",
            exchange + ".deliveries",
            demo,
            f"{demo}.dlq",
            *(f"{demo}.retry.{i}" for i in range(4)),
        ),
        exchanges,
    )


@pytest.mark.slow
def test_make_run_serves_handles_and_stops_on_one_ctrl_c(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "mintsoft-bridge").exists():
        pytest.skip("make run needs the checkout's .venv (make install)")
    port, console_port = _free_port(), _free_port()
    env, exchange, demo, subscribers = _environment(tmp_path, port, console_port)
    log = tmp_path / "make-run.log"
    with log.open("w") as sink:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal gives it
        )
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", make)
        _wait_for(f"http://127.0.0.1:{console_port}/healthz", make)
        banner = log.read_text()
        assert f"http://127.0.0.1:{console_port}/" in banner
        key = re.search(r"APIKEY=([^']+)'", banner)
        assert key is not None, banner
        assert "password 'dev-console-password'" in banner
        assert str(subscribers) in banner
        status, body = http(
            f"http://127.0.0.1:{port}/webhooks/despatched?APIKEY={key.group(1)}",
            fixture_body("despatched"),
            {"Content-Type": "application/json"},
        )
        assert status == 200, body
        deadline = time.monotonic() + 30
        while "despatched webhook for order 20285" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # The ledger indexed it and the demo worker's delivery: trace shows it delivered.
        assert "trace 20285" in banner
        deadline = time.monotonic() + 30
        while True:
            traced = subprocess.run(
                [str(ROOT / ".venv" / "bin" / "mintsoft-bridge"), "trace", "20285", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if traced.returncode == 0 and _state(traced.stdout, demo) == "delivered":
                break
            assert time.monotonic() < deadline, traced.stdout + traced.stderr
            time.sleep(0.2)
        # The console is up and asks for a sign-in.
        status, page = http(f"http://127.0.0.1:{console_port}/login")
        assert status == 200 and b'type="password"' in page
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            make.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            raise
        _cleanup(exchange, demo)
    # Nothing of the four is left running.
    leftover = subprocess.run(
        ["pgrep", "-g", str(make.pid)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == "", leftover.stdout


def test_make_run_stops_the_others_when_one_cannot_start(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "mintsoft-bridge").exists():
        pytest.skip("make run needs the checkout's .venv (make install)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        console_port = int(taken.getsockname()[1])
        env, exchange, demo, _ = _environment(tmp_path, _free_port(), console_port)
        try:
            done = subprocess.run(
                ["make", "--no-print-directory", "run"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                start_new_session=True,
            )
        finally:
            _cleanup(exchange, demo)
    assert done.returncode != 0
    assert "BRIDGE_CONSOLE_HOST/PORT" in done.stderr + done.stdout
    assert "one of the four failed (exit 2): stopping the others" in done.stderr
