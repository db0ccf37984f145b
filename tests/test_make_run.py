"""``make run``, started as a newcomer would: serve, the demo worker, the ledger and the
console come up on the ports of BRIDGE_PORT / BRIDGE_CONSOLE_PORT, a posted webhook is
handled by the one demo subscriber (its queue named after the exchange) and indexed by the
ledger (trace shows it delivered), the banner says where the CLI is, and one Ctrl-C
(SIGINT to the terminal's process group) stops them all. ``make demo`` adds the sandbox
Mintsoft and sync: a dropped despatch is recovered and shows in the console."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
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


def _environment(tmp_path: Path, port: int, console_port: int) -> tuple[dict[str, str], str, str]:
    """make run's environment: the test's own ports, exchange and spool; the demo subscriber
    is make run's own, whose queue is named after the exchange (unique to the test)."""
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
    env.pop("SUBSCRIBERS", None)
    return env, exchange, f"demo.{exchange}"


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
    (ROOT / "var" / "make-run" / f"subscribers.{exchange}.toml").unlink(missing_ok=True)


def _start(target: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as sink:
        return subprocess.Popen(
            ["make", "--no-print-directory", target],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal gives it
        )


def _ctrl_c(make: subprocess.Popen[str]) -> None:
    """What Ctrl-C does; then nothing of the group is left running."""
    os.killpg(make.pid, signal.SIGINT)
    try:
        make.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(make.pid, signal.SIGKILL)
        raise
    leftover = subprocess.run(
        ["pgrep", "-g", str(make.pid)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == "", leftover.stdout


def _printed(log: Path, text: str, make: subprocess.Popen[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert make.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return log.read_text()


@pytest.mark.slow
def test_make_run_serves_handles_and_stops_on_one_ctrl_c(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "mintsoft-bridge").exists():
        pytest.skip("make run needs the checkout's .venv (make install)")
    port, console_port = _free_port(), _free_port()
    env, exchange, demo = _environment(tmp_path, port, console_port)
    log = tmp_path / "make-run.log"
    make = _start("run", env, log)
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", make)
        _wait_for(f"http://127.0.0.1:{console_port}/healthz", make)
        banner = log.read_text()
        assert f"http://127.0.0.1:{console_port}/" in banner
        key = re.search(r"APIKEY=([^']+)'", banner)
        assert key is not None, banner
        assert "password 'dev-console-password'" in banner
        # The CLI is not on PATH after make run: the banner says where it is.
        assert ".venv/bin/mintsoft-bridge --help" in banner
        assert "source .venv/bin/activate" in banner
        # One demo subscriber, its queue named after the exchange, the variable to change it.
        assert f"queue {demo}" in banner and "SUBSCRIBERS=FILE" in banner
        _printed(log, f"consuming {demo}", make)
        status, body = http(
            f"http://127.0.0.1:{port}/webhooks/despatched?APIKEY={key.group(1)}",
            fixture_body("despatched"),
            {"Content-Type": "application/json"},
        )
        assert status == 200, body
        message = json.loads(body)["message_id"]
        _printed(log, f"despatched webhook handled subscriber={demo}", make)
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
        try:
            _ctrl_c(make)
        finally:
            _cleanup(exchange, demo)
    about = [line for line in log.read_text().splitlines() if message in line]
    handled = [line for line in about if "webhook for order 20285" in line]
    assert len(handled) == 1, about  # one subscriber, not two
    assert len(about) <= 3, about  # the access log, the handler's line, the worker's


def test_make_run_stops_the_others_when_one_cannot_start(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "mintsoft-bridge").exists():
        pytest.skip("make run needs the checkout's .venv (make install)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        console_port = int(taken.getsockname()[1])
        env, exchange, demo = _environment(tmp_path, _free_port(), console_port)
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
    assert "one of the 4 failed (exit 2): stopping the others" in done.stderr


def _console_recovered(base: str, password: str) -> int | None:
    """Sign in to the console as a browser does; the overview's "Recovered" figure."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = opener.open(base + "/login", timeout=10).read().decode()
    token = re.search(r'name="login_token" value="([^"]+)"', form)
    assert token is not None, form
    data = urllib.parse.urlencode(
        {"login_token": token.group(1), "password": password, "next": "/"}
    ).encode()
    overview = opener.open(base + "/login", data=data, timeout=10).read().decode()
    figure = re.search(r"<dt>Recovered</dt><dd>(\d+)</dd>", overview)
    return int(figure.group(1)) if figure else None


@pytest.mark.slow
def test_make_demo_shows_a_dropped_despatch_recovered_by_sync(tmp_path: Path) -> None:
    """``make demo`` as a newcomer runs it, with fast settings: the sandbox's orders are
    enrolled by sync, despatched with most calls dropped, and sync recovers a dropped one,
    which the demo worker handles (x-source reconcile) and the console counts."""
    if not (ROOT / ".venv" / "bin" / "mintsoft-bridge").exists():
        pytest.skip("make demo needs the checkout's .venv (make install)")
    port, console_port, sandbox_port = _free_port(), _free_port(), _free_port()
    env, exchange, demo = _environment(tmp_path, port, console_port)
    state = tmp_path / "demo" / "sync.sqlite3"
    env.update(
        SANDBOX_PORT=str(sandbox_port),
        SANDBOX_ARGS="--orders 3 --drop 0.9 --step 1s",
        BRIDGE_SYNC_INTERVAL="0.5s",
        BRIDGE_SYNC_GRACE="2s",
        DEMO_SYNC_STATE_PATH=str(state),
    )
    log = tmp_path / "make-demo.log"
    make = _start("demo", env, log)
    try:
        text = _printed(log, "despatched webhook: dropped", make, timeout=90)
        dropped = re.search(r"order (\d+) despatched webhook: dropped", text)
        assert dropped is not None
        order = dropped.group(1)
        text = _printed(
            log, f"recovered a despatched webhook Mintsoft did not deliver (order {order})", make
        )
        handled = re.compile(
            rf"despatched webhook handled subscriber={re.escape(demo)} .*order_id={order} "
            r"request_id=reconcile-"
        )
        deadline = time.monotonic() + 30
        while not handled.search(log.read_text()):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        status = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "mintsoft-bridge"), "sync", "status"],
            env={**env, "BRIDGE_SYNC_STATE_PATH": str(state)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        recovered = re.search(r"recovered webhooks: .*despatched (\d+)", status.stdout)
        assert recovered is not None and int(recovered.group(1)) >= 1, status.stdout
        shown = _console_recovered(f"http://127.0.0.1:{console_port}", "dev-console-password")
        assert shown is not None and shown >= 1
    finally:
        try:
            _ctrl_c(make)
        finally:
            _cleanup(exchange, demo)
