"""sync under faults: SIGKILL mid-page and mid-enrolment, Mintsoft throttling (429 with
Retry-After) and failing (503), and the broker away while recovered webhooks are published."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from bridge.mintsoft.sync.runner import Sync
from bridge.mintsoft.sync.state import SyncState
from bridge.mintsoft.sync.status import sync_status
from tests.conftest import AMQP_URL, API_KEY, BrokerProbe
from tests.support.mintsoft_world import MintsoftWorld
from tests.support.sync_harness import (
    MS_KEY,
    ArchiveStandIn,
    read_queue,
    subscriber,
    sync_settings,
)
from tests.support.tcp_proxy import TcpProxy
from tests.worker_helpers import wait_until

NOWHERE = "http://127.0.0.1:9"
"""A public URL for tests that only enrol: nothing is ever posted to it."""


async def _sync_process(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "sync",
        "--once",
        env={**os.environ, **env},
        stdout=log.open("a"),
        stderr=asyncio.subprocess.STDOUT,
    )


async def _until(condition: Callable[[], object]) -> None:
    """Sync's steps come fast: asked often, for at most 30 s."""
    await wait_until(condition, 30, interval=0.005)


@pytest.mark.slow
async def test_sigkill_mid_page_and_mid_enrolment_misses_none_enrols_none_twice(
    tmp_path: Path, exchange: str
) -> None:
    world = MintsoftWorld()
    await world.start()
    try:
        orders = [world.create() for _ in range(350)]
        state_path = tmp_path / "state.sqlite3"
        env = {
            "BRIDGE_MINTSOFT_URL": world.url,
            "BRIDGE_MINTSOFT_API_KEY": MS_KEY,
            "BRIDGE_PUBLIC_URL": NOWHERE,
            "BRIDGE_API_KEYS": API_KEY,
            "BRIDGE_SYNC_STATE_PATH": str(state_path),
            "BRIDGE_SYNC_RECONCILE": "off",
            "BRIDGE_MINTSOFT_RATE": "1000",
            "BRIDGE_AMQP_URL": AMQP_URL,
            "BRIDGE_EXCHANGE": exchange,
        }
        log = tmp_path / "sync.log"
        # 1: killed while the second page of the order list is being answered.
        world.page_delay = 0.3
        process = await _sync_process(env, log)
        await _until(lambda: world.calls["GET Order/List"] >= 2)
        await asyncio.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
        assert sum(world.puts.values()) == 0
        # Orders keep arriving while sync is down.
        orders += [world.create() for _ in range(50)]
        # 2: killed in the middle of enrolling.
        world.page_delay = 0.0
        process = await _sync_process(env, log)
        await _until(lambda: sum(world.puts.values()) >= 120)
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
        done = sum(world.puts.values())
        assert done < len(orders), "the kill came too late to test anything"
        # 3: runs to the end.
        process = await _sync_process(env, log)
        assert await process.wait() == 0, log.read_text()
        assert {o.id: world.puts[o.id] for o in orders} == {o.id: 1 for o in orders}
        state = SyncState(str(state_path))
        try:
            assert state.order_counts() == {"enrolled": 400}
        finally:
            state.close()
    finally:
        await world.close()


@pytest.mark.slow
async def test_throttled_and_failing_mintsoft_waits_and_catches_up(
    tmp_path: Path, exchange: str
) -> None:
    world = MintsoftWorld()
    await world.start()
    try:
        settings = sync_settings(exchange, tmp_path, world.url, NOWHERE, sync_reconcile="off")
        async with Sync(settings, backoff=0.05) as sync:
            first = [world.create() for _ in range(40)]
            assert (await sync.run_pass()).ok
            # A short burst of 429 (Retry-After: 1), then 503: each call waits it out.
            second = [world.create() for _ in range(60)]
            world.outage(2.0, 429)
            started = time.monotonic()
            report = await sync.run_pass()
            assert report.ok, report.errors
            world.outage(2.0, 503)
            third = [world.create() for _ in range(30)]
            report = await sync.run_pass()
            assert report.ok, report.errors
            assert time.monotonic() - started >= 3.5  # it waited (a loose lower bound)
            assert 1 <= world.answers[429] <= 6  # Retry-After honoured: no hammering
            assert 1 <= world.answers[503] <= 6
            # A longer outage (past every retry) fails the pass, loses nothing, and the
            # next pass catches up.
            fourth = [world.create() for _ in range(30)]
            world.outage(12.0, 503)
            failed = await sync.run_pass()
            assert not failed.ok
            assert "503" in (sync_status(settings).last_error or "")
            await asyncio.sleep(
                max(0.0, world.api.outage_until - asyncio.get_running_loop().time())
            )
            assert (await sync.run_pass()).ok
        everything = first + second + third + fourth
        assert {o.id: world.puts[o.id] for o in everything} == {o.id: 1 for o in everything}
    finally:
        await world.close()


async def test_broker_away_during_reconcile_marks_nothing_recovered_before_its_confirm(
    tmp_path: Path, exchange: str, probe: BrokerProbe
) -> None:
    world = MintsoftWorld(drop=1.0)  # every webhook lost
    await world.start()
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    try:
        settings = sync_settings(
            exchange, tmp_path, world.url, NOWHERE, amqp_urls=(proxy.url,), publish_timeout=1.0
        )
        archive = ArchiveStandIn(probe, exchange)
        await archive.open()
        erp = await subscriber(probe, exchange, ("despatched", "cancelled"))
        orders = [world.create() for _ in range(20)]
        async with Sync(settings, seen=archive.seen, backoff=0.05) as sync:
            assert (await sync.run_pass()).ok
            for order in orders[:15]:
                await world.despatch(order)
            for order in orders[15:]:
                await world.cancel(order)
            await asyncio.sleep(settings.sync_grace + 0.1)
            proxy.black_hole()
            report = await sync.run_pass()
            assert not report.ok
            assert report.reconcile.total_recovered == 0
            assert sync_status(settings).recovered == {}
            assert sync_status(settings).pending_events == 20
            assert sync.link is not None
            lost = sync.link.channel
            proxy.heal()
            proxy.reset_all()  # the connection that lost bytes: the link opens a new one
            await _until(lambda: sync.link is not None and sync.link.channel not in (None, lost))
            report = await sync.run_pass()
            assert report.ok, report.errors
            assert report.reconcile.recovered == {"despatched": 15, "cancelled": 5}
        rows = await read_queue(probe, erp)
        assert {(e, o) for e, o, _ in rows} == {
            ("despatched" if n < 15 else "cancelled", order.id) for n, order in enumerate(orders)
        }
        assert {source for _, _, source in rows} == {"reconcile"}
    finally:
        await proxy.close()
        await world.close()


async def test_sync_runs_until_sigterm_enrolling_orders_as_they_come_and_serves_metrics(
    tmp_path: Path, exchange: str
) -> None:
    from tests.support.processes import http
    from tests.support.rabbit_node import free_port

    world = MintsoftWorld()
    await world.start()
    port = free_port()
    try:
        env = {
            "BRIDGE_MINTSOFT_URL": world.url,
            "BRIDGE_MINTSOFT_API_KEY": MS_KEY,
            "BRIDGE_PUBLIC_URL": NOWHERE,
            "BRIDGE_API_KEYS": API_KEY,
            "BRIDGE_SYNC_STATE_PATH": str(tmp_path / "state.sqlite3"),
            "BRIDGE_SYNC_RECONCILE": "off",
            "BRIDGE_SYNC_INTERVAL": "0.2s",
            "BRIDGE_MINTSOFT_RATE": "100",
            "BRIDGE_LOG_FORMAT": "json",
        }
        log = tmp_path / "sync.log"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "sync",
            "--metrics-port",
            str(port),
            env={**os.environ, **env},
            stdout=log.open("a"),
            stderr=asyncio.subprocess.STDOUT,
        )
        orders = []
        for _ in range(5):
            orders += [world.create() for _ in range(4)]
            await asyncio.sleep(0.3)
        await _until(lambda: all(world.puts[o.id] == 1 for o in orders))
        status, text = await asyncio.to_thread(http, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert b"bridge_sync_enrolled_total 20.0" in text
        assert b'bridge_mintsoft_requests_total{answer="200"}' in text
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        entries = [orjson.loads(line) for line in log.read_text().splitlines()]
        assert any(e["message"].startswith("sync pass: ") for e in entries)
        assert MS_KEY not in log.read_text()
        assert {o.id: world.puts[o.id] for o in orders} == {o.id: 1 for o in orders}
    finally:
        await world.close()
