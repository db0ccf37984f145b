"""The ``worker`` command as a process: SIGKILL loses nothing, SIGTERM finishes in-flight
work, and every mistake in a subscribers file is one line and exit status 2."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from bridge.cli import main
from bridge.worker.message import Message
from tests.conftest import AMQP_URL, BrokerProbe
from tests.support.rabbit_node import free_port
from tests.worker_helpers import (
    body_for,
    publish,
    running_worker,
    subscriber,
    track_subscriber,
    unique_name,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent


def _config(path: Path, name: str, handler: str, prefetch: int = 8) -> Path:
    path.write_text(
        f'[[subscriber]]\nname = "{name}"\nevents = ["*"]\nhandler = "{handler}"\n'
        f'retry_delays = ["200ms"]\nprefetch = {prefetch}\n'
    )
    return path


def _start_worker(
    config: Path, exchange: str, log: Path, *args: str, **env_vars: str
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BRIDGE_TEST_LOG=str(log), BRIDGE_AMQP_URL=AMQP_URL, **env_vars)
    env["BRIDGE_EXCHANGE"] = exchange
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "worker", "--config", str(config), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def _wait_consuming(probe: BrokerProbe, queue: str, proc: subprocess.Popen[bytes]) -> None:
    async def consuming() -> bool:
        assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode()
        try:
            channel = await probe._chan()
            ok = await channel.queue_declare(queue, passive=True)
        except Exception:
            return False
        return bool(ok.consumer_count)

    await wait_until(consuming, timeout=20, interval=0.1)


async def test_sigkill_with_unacked_messages_loses_none(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    sub = subscriber(delays=(200,))
    track_subscriber(probe, exchange, sub)
    log = tmp_path / "held.log"
    config = _config(tmp_path / "subs.toml", sub.name, "tests.worker_helpers:hold", prefetch=5)
    proc = _start_worker(config, exchange, log)
    try:
        await _wait_consuming(probe, sub.name, proc)
        sent = [
            await publish(probe, exchange, "despatched", body_for("despatched", i))
            for i in range(5)
        ]
        await wait_until(lambda: len(_lines(log)) == 5, timeout=15)
        assert sorted(_lines(log)) == sorted(sent)  # all five held, none acked
    finally:
        proc.kill()
        proc.wait(10)
    got: list[Message] = []

    async def keep(message: Message) -> None:
        got.append(message)

    async with running_worker(probe, exchange, [sub], {sub.name: keep}):
        await wait_until(lambda: len(got) >= 5, timeout=15)
    assert Counter(m.message_id for m in got) == Counter(sent)
    assert all(m.redelivered for m in got)
    # The quorum queue counts it: the header the worker's crash-loop guard reads.
    assert all(m.headers.get("x-delivery-count") == 1 for m in got)
    assert await probe.count(sub.name) == 0


async def test_sigterm_finishes_the_in_flight_message_and_exits_0(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    sub = subscriber(delays=(200,))
    track_subscriber(probe, exchange, sub)
    log = tmp_path / "slow.log"
    config = _config(tmp_path / "subs.toml", sub.name, "tests.worker_helpers:slow")
    port = free_port()
    proc = _start_worker(
        config, exchange, log, "--metrics-port", str(port), BRIDGE_LOG_FORMAT="json"
    )
    try:
        await _wait_consuming(probe, sub.name, proc)
        first = await publish(probe, exchange, "despatched", body_for("despatched", 0))
        await wait_until(lambda: f"done {first}" in _lines(log), timeout=15)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200
            scraped = await response.text()
        assert (
            f'bridge_worker_messages_total{{outcome="acked",subscriber="{sub.name}"}} 1.0'
            in scraped
        )
        assert f'bridge_handler_seconds_count{{subscriber="{sub.name}"}} 1.0' in scraped

        second = await publish(probe, exchange, "cancelled", body_for("cancelled", 0))
        await wait_until(lambda: f"start {second}" in _lines(log), timeout=15)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = (proc.stdout.read() if proc.stdout else b"").decode()
    assert code == 0, output
    assert time.monotonic() - started < 12
    assert f"done {second}" in _lines(log)
    assert await probe.count(sub.name) == 0
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    delivered = [r for r in records if r.get("message_id") == second]
    assert delivered, output
    assert {"subscriber", "request_id", "order_id", "attempt", "event"} <= set(delivered[-1])
    assert delivered[-1]["subscriber"] == sub.name
    assert "Traceback" not in output


BAD_CONFIGS = {
    "unknown event": ('events = ["shipped"]\nhandler = "tests.worker_helpers:slow"', "events"),
    "bad delay": (
        'events = ["*"]\nhandler = "tests.worker_helpers:slow"\nretry_delays = ["5x"]',
        "retry_delays",
    ),
    "handler and forward_url": (
        'events = ["*"]\nhandler = "tests.worker_helpers:slow"\nforward_url = "http://x/"',
        "forward_url",
    ),
    "neither": ('events = ["*"]', "forward_url"),
    "forward port out of range": (
        'events = ["*"]\nforward_url = "https://erp:99999/x"',
        "forward_url",
    ),
    "unimportable handler": ('events = ["*"]\nhandler = "no_such_module_9a:handle"', "handler"),
    "missing function": ('events = ["*"]\nhandler = "tests.worker_helpers:nope"', "handler"),
    "sync function": ('events = ["*"]\nhandler = "tests.worker_helpers:unique_name"', "async"),
    "unknown field": (
        'events = ["*"]\nhandler = "tests.worker_helpers:slow"\nretries = 3',
        "retries",
    ),
    "held too long": (
        'events = ["*"]\nhandler = "tests.worker_helpers:slow"\ntimeout = "10m"',
        "timeout x in_process_tries",
    ),
    "bad prefetch": (
        'events = ["*"]\nhandler = "tests.worker_helpers:slow"\nprefetch = 0',
        "prefetch",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_subscribers_file_is_one_line_naming_the_field_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_AMQP_URL", "amqp://127.0.0.1:1/")
    body, field = BAD_CONFIGS[case]
    config = tmp_path / "subs.toml"
    config.write_text(f'[[subscriber]]\nname = "erp"\n{body}\n')
    assert main(["worker", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert field in err and "erp" in err


def test_credentials_in_forward_url_and_an_authorization_header_are_refused_at_start(
    tmp_path: Path,
) -> None:
    """aiohttp refuses such a request, so every message would end in the DLQ: one line,
    exit 2, at start, through the real command line, the secrets not in it."""
    config = tmp_path / "subs.toml"
    config.write_text(
        '[[subscriber]]\nname = "erp"\nevents = ["*"]\n'
        'forward_url = "https://bridge:pa55word@erp.internal/hook"\n'
        'forward_headers = { authorization = "Bearer tok3n" }\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "worker", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BRIDGE_AMQP_URL": "amqp://127.0.0.1:1/"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "erp" in done.stderr and "Authorization" in done.stderr
    assert "pa55word" not in done.stderr and "tok3n" not in done.stderr


def test_duplicate_names_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = '[[subscriber]]\nname = "erp"\nevents = ["*"]\nhandler = "tests.worker_helpers:slow"\n'
    config = tmp_path / "subs.toml"
    config.write_text(table + table)
    assert main(["worker", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "duplicate name" in err


def test_topology_print_lists_the_subscriber_queues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name()
    config = tmp_path / "subs.toml"
    config.write_text(
        f'[[subscriber]]\nname = "{name}"\nevents = ["despatched"]\n'
        'forward_url = "http://erp.internal/hook"\nretry_delays = ["5s", "1m"]\n'
    )
    assert main(["topology", "--print", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"queue    {name} (durable)" in out
    assert f"{name}.retry.0 (durable)" in out and "x-message-ttl=5000" in out
    assert f"{name}.retry.1 (durable)" in out and "x-message-ttl=60000" in out
    assert f"queue    {name}.dlq (durable)" in out
    assert f"-> {name} [order.despatched]" in out
