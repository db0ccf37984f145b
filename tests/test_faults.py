"""Broker and bridge faults under concurrent load, each ending with the loss-ledger check:
every webhook answered 200 is in the queue afterwards (acknowledged-but-missing = 0).

All of them run against a private RabbitMQ node (never the shared broker on 5672)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import orjson
import pytest

from bridge.core import metrics
from bridge.core.contract import message_id, webhook_envelope
from bridge.receiving.delivery import Delivery
from bridge.receiving.spool import record_size
from tests.conftest import API_KEY, BridgeFactory, BrokerProbe, RunningBridge, receiver_names
from tests.support.ledger import EVENT, Ledger, Report, check, ledger_body, send_load
from tests.support.rabbit_node import RabbitNode, free_port
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.both_publish_paths

PUBLISH_TIMEOUT = 1.0
AUTH = {"APIKEY": API_KEY}


@pytest.fixture
async def node(healthy_node: RabbitNode, exchange: str) -> AsyncIterator[RabbitNode]:
    """The private node; what the test's bridge declared on it is deleted afterwards."""
    yield healthy_node
    with contextlib.suppress(Exception):
        probe = BrokerProbe(healthy_node.url)
        queues, exchanges = receiver_names(exchange)
        probe.track(queues=queues, exchanges=exchanges)
        async with asyncio.timeout(15):
            await probe.cleanup()


async def spooling_bridge(
    make_bridge: BridgeFactory, url: str, spool: Path, **overrides: Any
) -> RunningBridge:
    return await make_bridge(
        wait_connected=False,
        amqp_urls=(url,),
        publish_timeout=PUBLISH_TIMEOUT,
        spool_path=str(spool),
        **overrides,
    )


async def wait_drained(delivery: Delivery, timeout: float = 60) -> None:
    assert delivery.spool is not None
    async with asyncio.timeout(timeout):
        while delivery.spool.depth:  # noqa: ASYNC110 - polling a plain counter
            await asyncio.sleep(0.1)


async def under_load(
    make_bridge: BridgeFactory, url: str, tmp_path: Path, fault: Callable[[], Awaitable[None]]
) -> Ledger:
    """Start a spooling bridge on ``url``, send 100 webhooks/s from a second before
    ``fault()`` until a second after it (however long rabbitmqctl takes on a busy machine),
    then wait until the spool is drained."""
    bridge = await spooling_bridge(make_bridge, url, tmp_path / "spool.sqlite3")
    await bridge.delivery.publisher.link.wait_up(20)
    stop = asyncio.Event()
    running = asyncio.create_task(
        send_load(bridge.url, count=3000, concurrency=16, rate=100, params=AUTH, stop=stop)
    )
    try:
        await asyncio.sleep(1)
        await fault()
        await asyncio.sleep(1)
    finally:
        stop.set()
        ledger = await running
    await wait_drained(bridge.delivery)
    assert set(ledger.statuses()) == {200}  # the spool took what the broker could not
    assert ledger.count("spooled") > 0  # the fault did hit the bridge
    return ledger


async def ledger_check(ledger: Ledger, node: RabbitNode, exchange: str) -> Report:
    report = await check(ledger, node.url, [exchange + ".unrouted"])
    print(report)
    assert report.missing == [], report
    assert report.unexpected == [], report
    return report


@pytest.mark.slow
async def test_stop_app_mid_load_then_start_app(
    node: RabbitNode, exchange: str, make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    async def fault() -> None:
        await asyncio.to_thread(node.stop_app)
        await asyncio.sleep(1)
        await asyncio.to_thread(node.start_app)

    ledger = await under_load(make_bridge, node.url, tmp_path, fault)
    assert ledger.count("accepted") > 0
    await ledger_check(ledger, node, exchange)


@pytest.mark.slow
async def test_broker_killed_hard_and_restarted(
    node: RabbitNode, exchange: str, make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    async def fault() -> None:
        await asyncio.to_thread(node.kill)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(node.start)

    ledger = await under_load(make_bridge, node.url, tmp_path, fault)
    await ledger_check(ledger, node, exchange)


@pytest.mark.slow
async def test_tcp_path_reset_and_black_holed(
    node: RabbitNode, exchange: str, make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    proxy = TcpProxy("127.0.0.1", node.port)
    await proxy.start()

    async def fault() -> None:
        proxy.reset_all()
        await asyncio.sleep(1.5)
        proxy.black_hole()  # the link still looks up; every confirm just never comes
        await asyncio.sleep(2.5)
        proxy.heal()
        proxy.reset_all()

    try:
        ledger = await under_load(make_bridge, proxy.url, tmp_path, fault)
    finally:
        await proxy.close()
    # Timed out and spooled, never hung: no answer took much more than the publish timeout.
    assert ledger.latencies()[-1] < PUBLISH_TIMEOUT + 5
    await ledger_check(ledger, node, exchange)


@pytest.mark.slow
async def test_memory_alarm_blocks_publishers(
    node: RabbitNode, exchange: str, make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    async def fault() -> None:
        try:
            await asyncio.to_thread(node.ctl, "set_vm_memory_high_watermark", "0")
            await asyncio.sleep(2)
        finally:
            await asyncio.to_thread(node.ctl, "set_vm_memory_high_watermark", "0.4")

    ledger = await under_load(make_bridge, node.url, tmp_path, fault)
    assert ledger.latencies()[-1] < PUBLISH_TIMEOUT + 5
    await ledger_check(ledger, node, exchange)


async def test_unroutable_when_the_alternate_exchange_is_deleted(
    node: RabbitNode, exchange: str, make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    returned = metrics.PUBLISH_RESULTS.labels("returned")._value.get()

    async def fault() -> None:
        connection = await aiormq.connect(node.url)
        try:
            channel = await connection.channel()
            await channel.exchange_delete(exchange + ".unrouted")
        finally:
            await connection.close()

    ledger = await under_load(make_bridge, node.url, tmp_path, fault)
    # Messages went nowhere (returned): none was answered "accepted" for that; they were
    # spooled, the drain put the alternate exchange back, and published them again.
    assert metrics.PUBLISH_RESULTS.labels("returned")._value.get() > returned
    await ledger_check(ledger, node, exchange)


def _serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def _wait_serving(base: str, process: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(30):
        while True:
            assert process.poll() is None, "serve exited"
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await _get_json(base + "/healthz")
                if status == 200:
                    return
            await asyncio.sleep(0.1)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_bridge_killed_with_messages_in_the_spool_drains_them_after_restart(
    node: RabbitNode,
    exchange: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BRIDGE_PORT": str(port),
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "BRIDGE_PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
        "BRIDGE_ARCHIVE": "false",  # the ledger is checked in <exchange>.unrouted
        # First life: no broker at all, so everything goes to the spool.
        "BRIDGE_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
    }
    first = _serve(env)
    processes.append(first)
    await _wait_serving(base, first)
    ledger = Ledger()
    running = asyncio.create_task(
        send_load(base, count=600, concurrency=16, params=AUTH, ledger=ledger)
    )
    async with asyncio.timeout(30):
        while len(ledger.acknowledged) < 150:  # noqa: ASYNC110 - polling a plain counter
            await asyncio.sleep(0.01)
    first.send_signal(signal.SIGKILL)  # mid-load, requests in flight
    first.wait()
    await running
    assert ledger.count("spooled") == len(ledger.acknowledged) >= 150

    second = _serve({**env, "BRIDGE_AMQP_URL": node.url})
    processes.append(second)
    await _wait_serving(base, second)
    async with asyncio.timeout(60):
        while True:
            status, ready = await _get_json(base + "/readyz")
            if status == 200 and ready["broker"] == "connected" and ready["spool_depth"] == 0:
                break
            await asyncio.sleep(0.2)
    await ledger_check(ledger, node, exchange)


async def test_a_full_spool_answers_503_and_writes_nothing_half(
    node: RabbitNode, exchange: str, make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    path = tmp_path / "spool.sqlite3"
    sample = webhook_envelope(
        EVENT, ledger_body("x" * 10, 99), orjson.loads(ledger_body("x" * 10, 99)), "r" * 16, 0
    )
    room = 40 * record_size(sample, orjson.dumps(sample.headers))
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    first = await spooling_bridge(make_bridge, closed, path, spool_max_bytes=room)
    ledger = await send_load(first.url, count=80, concurrency=16, params=AUTH)
    statuses = ledger.statuses()
    assert set(statuses) == {200, 503}
    assert 30 <= statuses[200] <= 45
    ready = await first.client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["spool"] == "full"
    await first.client.close()
    await first.delivery.close()
    await first.delivery.publisher.link.close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT event, body, message_id FROM spool").fetchall()
    assert {m for _, _, m in rows} == ledger.acknowledged
    assert all(message_id(event, body) == m for event, body, m in rows)

    second = await spooling_bridge(make_bridge, node.url, path)
    await wait_drained(second.delivery)
    report = await ledger_check(ledger, node, exchange)
    assert report.unacknowledged_delivered == 0  # nothing answered 503 was published
