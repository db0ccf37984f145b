"""A scale-down strands no spooled webhook: ``serve`` stopped with SIGTERM drains its spool
first while the broker is reachable, and ``spool drain --path`` publishes a spool file that a
removed receiver left behind, each message once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from bridge.core.contract import Envelope, webhook_envelope
from bridge.receiving.spool import Spool, read_status
from tests.conftest import AMQP_URL, API_KEY, BrokerProbe, delete_declared, receiver_names
from tests.support.rabbit_node import free_port
from tests.support.tcp_proxy import TcpProxy

WEBHOOKS = 4000
"""Enough that the drain of a freshly reconnected receiver is still running when SIGTERM
comes (the test checks that it was)."""


def _body(n: int) -> bytes:
    return orjson.dumps({"ID": 700_000 + n, "OrderNumber": f"SO-{n}", "ClientId": 3})


def _env(exchange: str, port: int, amqp_url: str, spool: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BRIDGE_AMQP_URL": amqp_url,
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_PORT": str(port),
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_SPOOL_PATH": str(spool),
        "BRIDGE_PUBLISH_TIMEOUT": "2",
    }


async def _readyz(session: aiohttp.ClientSession, base: str) -> dict[str, Any] | None:
    try:
        async with session.get(base + "/readyz") as response:
            state: dict[str, Any] = await response.json()
            return state
    except aiohttp.ClientError:
        return None


async def _wait_for(
    session: aiohttp.ClientSession, base: str, process: subprocess.Popen[bytes], test: Any
) -> dict[str, Any]:
    for _ in range(600):
        assert process.poll() is None, f"serve exited with {process.returncode}"
        state = await _readyz(session, base)
        if state is not None and test(state):
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"{base}/readyz never showed the expected state")


async def _spool_webhooks(session: aiohttp.ClientSession, base: str, count: int) -> list[str]:
    """POST ``count`` different webhooks, 32 at a time; each must be answered ``spooled``."""
    gate = asyncio.Semaphore(32)

    async def one(n: int) -> str:
        async with (
            gate,
            session.post(
                f"{base}/webhooks/despatched", params={"APIKEY": API_KEY}, data=_body(n)
            ) as response,
        ):
            answer = await response.json()
            assert response.status == 200 and answer["status"] == "spooled", answer
            message_id: str = answer["message_id"]
            return message_id

    return await asyncio.gather(*(one(n) for n in range(count)))


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve"], env=env, stdout=sink, stderr=sink
        )


async def _exit_code(process: subprocess.Popen[bytes]) -> int:
    try:
        return await asyncio.to_thread(process.wait, 150)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


async def _scrape_until_empty(session: aiohttp.ClientSession, url: str) -> bool:
    """Scrape ``url`` until it shows an empty spool (True) or stops answering (False)."""
    for _ in range(3000):
        try:
            async with session.get(url) as response:
                if "\nbridge_spool_depth 0.0\n" in await response.text():
                    return True
        except aiohttp.ClientError:
            return False
        await asyncio.sleep(0.02)
    return False


@pytest.mark.slow
async def test_sigterm_with_a_spool_and_a_reachable_broker_publishes_it_all_before_exit(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    queue = await probe.bind_queue(exchange, "order.#")
    broker = urlsplit(AMQP_URL)
    # The receiver's broker address is a proxy to a closed port: every connect is refused,
    # so webhooks are spooled by serve itself; pointing the proxy at the broker lets it in.
    proxy = TcpProxy("127.0.0.1", free_port())
    await proxy.start()
    port, spool = free_port(), tmp_path / "spool.sqlite3"
    base = f"http://127.0.0.1:{port}"
    metrics = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "serve.log"
    env = _env(exchange, port, proxy.url, spool)
    env["BRIDGE_METRICS_PORT"] = metrics.rsplit(":", 1)[1]
    process = _serve(env, log)
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_for(session, base, process, lambda s: s["broker"] != "connected")
            answered = await _spool_webhooks(session, base, WEBHOOKS)
            proxy.target_host, proxy.target_port = broker.hostname or "", broker.port or 5672
            state = await _wait_for(session, base, process, lambda s: s["broker"] == "connected")
            process.send_signal(signal.SIGTERM)
            # It stays to be scraped once more: Prometheus learns the spool ended empty.
            assert await _scrape_until_empty(session, metrics + "/metrics")
        # The premise: the background drain had not emptied the spool when SIGTERM came.
        assert state["spool_depth"] > 0, state
        assert await _exit_code(process) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        await proxy.close()
    output = log.read_text()
    assert read_status(str(spool)).depth == 0, output
    assert "the spool is empty" in output and "Traceback" not in output
    got = await probe.get_all(queue, expected=WEBHOOKS, timeout=30)
    ids = Counter(m.header.properties.message_id for m in got)
    assert set(ids) == set(answered) and len(answered) == WEBHOOKS
    assert max(ids.values()) == 1  # no fault on the way: each one once


async def test_sigterm_with_the_broker_unreachable_exits_and_keeps_the_spool(
    exchange: str, tmp_path: Path
) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    port, spool = free_port(), tmp_path / "spool.sqlite3"
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    process = _serve(_env(exchange, port, closed, spool), log)
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_for(session, base, process, lambda s: s["broker"] != "connected")
            await _spool_webhooks(session, base, 5)
        process.send_signal(signal.SIGTERM)
        assert await _exit_code(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert read_status(str(spool)).depth == 5
    output = log.read_text()
    assert f"mintsoft-bridge spool drain --path {spool}" in output, output


def _envelope(n: int) -> Envelope:
    body = _body(n)
    return webhook_envelope("despatched", body, orjson.loads(body), f"req-{n}", 1.7e9 + n)


async def _write_spool(path: Path, envelopes: list[Envelope]) -> None:
    spool = Spool(str(path), 100_000_000)
    await spool.open()
    await asyncio.gather(*(spool.append(e) for e in envelopes))
    await spool.close()


def _drain(
    path: Path, exchange: str, amqp_url: str, terminal: bool = False
) -> subprocess.CompletedProcess[str]:
    """``spool drain --path``; with ``terminal``, its stderr is a terminal (a pty)."""
    env = {**os.environ, "BRIDGE_AMQP_URL": amqp_url, "BRIDGE_EXCHANGE": exchange}
    env.pop("BRIDGE_SPOOL_PATH", None)
    command = [sys.executable, "-m", "bridge", "spool", "drain", "--path", str(path)]
    if not terminal:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    master, slave = os.openpty()
    try:
        done = subprocess.run(
            command, env=env, stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120
        )
        os.close(slave)
        slave = -1
        shown = b""
        with contextlib.suppress(OSError):  # EIO once everything written is read
            while chunk := os.read(master, 65536):
                shown += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return subprocess.CompletedProcess(command, done.returncode, done.stdout, shown.decode())


async def test_spool_drain_publishes_a_copied_spool_file_once_in_order_and_exits_0(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    queue = await probe.bind_queue(exchange, "order.#")
    left = tmp_path / "volume" / "spool.sqlite3"
    sent = [_envelope(n) for n in range(300)]
    await _write_spool(left, sent)
    copy = tmp_path / "rescued" / "spool.sqlite3"
    copy.parent.mkdir()
    shutil.copy(left, copy)

    result = await asyncio.to_thread(_drain, copy, exchange, AMQP_URL, True)
    assert result.returncode == 0, result.stderr
    assert f"published 300 webhooks from {copy}" in result.stdout
    assert "publishing [" in result.stderr and "300/300" in result.stderr  # on a terminal
    assert "Traceback" not in result.stderr
    got = await probe.get_all(queue, expected=300, timeout=15)
    assert [m.body for m in got] == [e.body for e in sent]  # each once, in order
    assert [m.header.properties.message_id for m in got] == [e.message_id for e in sent]
    assert read_status(str(copy)).depth == 0
    assert read_status(str(left)).depth == 300  # the original is untouched

    again = await asyncio.to_thread(_drain, copy, exchange, AMQP_URL)
    assert again.returncode == 0 and "published 0 webhooks" in again.stdout
    assert "publishing [" not in again.stderr  # not a terminal: no progress bar
    assert await probe.count(queue) == 0  # nothing published twice


async def test_spool_drain_without_a_broker_exits_1_naming_how_many_remain(
    exchange: str, tmp_path: Path
) -> None:
    path = tmp_path / "spool.sqlite3"
    await _write_spool(path, [_envelope(n) for n in range(7)])
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    result = await asyncio.to_thread(_drain, path, exchange, closed)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "7 webhooks remain" in last and "Traceback" not in result.stderr
    assert read_status(str(path)).depth == 7


async def test_spool_drain_of_a_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.sqlite3"
    result = await asyncio.to_thread(_drain, missing, "mintsoft.orders", AMQP_URL)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no spool file" in result.stderr
    assert not missing.exists()


async def test_waiting_for_the_drain_is_bounded_by_its_deadline_and_by_a_stall(
    tmp_path: Path,
) -> None:
    """With no broker, nothing drains: ``until_empty`` gives up at its deadline, or once
    nothing moved for ``stall`` seconds, and says how many remain; nothing is lost."""
    from bridge.amqp.connection import BrokerLink
    from bridge.amqp.publisher import Publisher
    from bridge.receiving.drain import Drainer

    path = tmp_path / "spool.sqlite3"
    await _write_spool(path, [_envelope(n) for n in range(3)])
    spool = Spool(str(path), 100_000_000)
    await spool.open()
    link = BrokerLink((f"amqp://guest:guest@127.0.0.1:{free_port()}/",))
    drainer = Drainer(spool, Publisher(link, "mintsoft.orders", 1.0))
    loop = asyncio.get_running_loop()
    try:
        await link.start()
        started = loop.time()
        assert await drainer.until_empty(deadline=started + 0.3) == 3
        assert loop.time() - started >= 0.3
        started = loop.time()
        assert await drainer.until_empty(stall=0.3) == 3
        assert loop.time() - started >= 0.3
    finally:
        await drainer.stop()
        await spool.close()
        await link.close()
    assert read_status(str(path)).depth == 3


def _copy_with_wal(spool: Path, folder: Path) -> int:
    """Copy a spool file and its ``-wal`` into ``folder``; the size of the WAL."""
    wal = Path(str(spool) + "-wal")
    shutil.copy(spool, folder / spool.name)
    shutil.copy(wal, folder / wal.name)
    return wal.stat().st_size


async def test_spool_drain_of_a_crashed_receivers_files_includes_what_is_only_in_the_wal(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    """A receiver that died leaves its recent commits in ``spool.sqlite3-wal``: copied with
    the spool file (as the README says), they are published too."""
    queue = await probe.bind_queue(exchange, "order.#")
    left = tmp_path / "volume" / "spool.sqlite3"
    sent = [_envelope(n) for n in range(40)]
    spool = Spool(str(left), 100_000_000)
    await spool.open()
    rescued = tmp_path / "rescued"
    rescued.mkdir()
    try:
        await asyncio.gather(*(spool.append(e) for e in sent))
        # Committed, not yet checkpointed into the main file: as a dead host's disk holds it.
        assert await asyncio.to_thread(_copy_with_wal, left, rescued) > 0
    finally:
        await spool.close()

    result = await asyncio.to_thread(_drain, rescued / left.name, exchange, AMQP_URL)
    assert result.returncode == 0, result.stderr
    got = await probe.get_all(queue, expected=40, timeout=15)
    assert [m.body for m in got] == [e.body for e in sent]


def test_a_spool_in_use_by_serve_is_refused_by_spool_drain_and_another_serve(
    exchange: str, tmp_path: Path
) -> None:
    """One process per spool file: a drain beside a running receiver would publish every
    message twice."""
    from tests.support.processes import bridge_process

    spool = tmp_path / "spool.sqlite3"
    port = free_port()
    env = _env(exchange, port, AMQP_URL, spool)
    try:
        with bridge_process(["serve"], env, f"http://127.0.0.1:{port}/readyz"):
            drain = _drain(spool, exchange, AMQP_URL)
            second = subprocess.run(
                [sys.executable, "-m", "bridge", "serve"],
                env={**env, "BRIDGE_PORT": str(free_port())},
                capture_output=True,
                text=True,
                timeout=60,
            )
        after = _drain(spool, exchange, AMQP_URL)  # once serve has stopped
    finally:
        delete_declared(AMQP_URL, *receiver_names(exchange))
    assert drain.returncode == 1, drain.stderr
    assert "in use by a running mintsoft-bridge" in drain.stderr.strip().splitlines()[-1]
    assert second.returncode == 2, second.stderr
    assert "BRIDGE_SPOOL_PATH" in second.stderr.strip().splitlines()[-1]
    assert after.returncode == 0, after.stderr
