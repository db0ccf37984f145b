"""rate_limit caps how often a subscriber's handler is called; a 429 with Retry-After pauses
the subscriber without spending a try or moving the message along the retry ladder."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web

from bridge.amqp.topology import dlq_name, retry_queue_name
from bridge.core import metrics
from bridge.core.durations import parse_rate
from bridge.worker.forwarder import Forwarder, retry_after_seconds
from bridge.worker.message import Message
from tests.conftest import BrokerProbe
from tests.support.rabbit_node import free_port
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until


def _count(name: str, outcome: str) -> float:
    return metrics.WORKER_MESSAGES.labels(name, outcome)._value.get()


@pytest.mark.slow
async def test_a_2_per_second_subscriber_takes_about_9_s_for_20_messages(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(prefetch=32, rate_limit=parse_rate("2/s"))
    calls: list[float] = []

    async def handler(message: Message) -> None:
        calls.append(time.monotonic())

    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        for n in range(20):
            await publish(probe, exchange, "despatched", body_for("despatched", n))
        await wait_until(lambda: len(calls) >= 20, timeout=30)
    # A first burst of 2, then 2 per second: the 20th call about 9 s after the first.
    # A loose lower bound only (never a benchmark): without the limit this takes ~0.1 s.
    assert calls[-1] - calls[0] >= 8.0
    assert len(calls) == 20


@pytest.fixture
async def busy_target() -> AsyncIterator[tuple[str, list[float]]]:
    """Answers the first POST with 429 and Retry-After: 2, every later one with 200."""
    seen: list[float] = []

    async def post(request: web.Request) -> web.Response:
        await request.read()
        seen.append(time.monotonic())
        if len(seen) == 1:
            return web.json_response({}, status=429, headers={"Retry-After": "2"})
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/erp", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/erp", seen
    await runner.cleanup()


async def test_a_429_with_retry_after_pauses_without_moving_along_the_ladder(
    probe: BrokerProbe, exchange: str, busy_target: tuple[str, list[float]]
) -> None:
    url, seen = busy_target
    # One try per delivery and a one-minute first step: had the 429 been counted as a
    # failure, the message would sit in <name>.retry.0 for a minute.
    sub = subscriber(delays=(60_000,), tries=1)
    forwarder = Forwarder(sub.name, url, timeout=5)
    async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
        await publish(probe, exchange, "despatched", body_for("despatched", 1))
        await wait_until(lambda: _count(sub.name, "acked") == 1, timeout=15)
        assert await probe.count(retry_queue_name(sub.name, 0)) == 0
        assert await probe.count(dlq_name(sub.name)) == 0
    await forwarder.close()
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 1.9  # it waited the 2 s the target asked for
    assert _count(sub.name, "retried") == 0
    assert _count(sub.name, "dead_lettered") == 0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(later, now=now.timestamp()) == pytest.approx(30.0)
    assert retry_after_seconds("-5") == 0.0


def test_rates() -> None:
    assert parse_rate("10/s").per_second == 10
    assert parse_rate("30/m").per_second == pytest.approx(0.5)
    assert parse_rate("0.5/s").count == 1 and parse_rate("0.5/s").seconds == 2
    assert parse_rate("10/d").per_second == pytest.approx(10 / 86400)
    assert parse_rate("5/30s").per_second == pytest.approx(1 / 6)
    for bad in ("10", "10/M", "0/s", "-1/s", "ten/s", "10/x", "10/", "nan/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)
