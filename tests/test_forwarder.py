"""The HTTP forwarder against a local aiohttp target: 2xx acks, 500 is retried, 400 is
dead-lettered, and while the target is down consumption pauses and nothing is lost."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bridge.amqp.topology import dlq_name, retry_queue_name
from bridge.core import metrics
from bridge.worker.forwarder import Forwarder, ForwardFailed
from bridge.worker.message import Message
from tests.conftest import BrokerProbe
from tests.support.rabbit_node import free_port
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until


@dataclass
class Target:
    """A local HTTP service: records each POST and answers ``status_for(message_id, n)``."""

    port: int = field(default_factory=free_port)
    status_for: Callable[[str, int], int] = lambda message_id, n: 200
    requests: list[tuple[Mapping[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mintsoft"

    def ids(self) -> list[str]:
        return [headers["X-Message-Id"] for headers, _ in self.requests]

    async def _post(self, request: web.Request) -> web.Response:
        headers = request.headers.copy()  # case-insensitive
        self.requests.append((headers, await request.read()))
        message_id = headers.get("X-Message-Id", "")
        status = self.status_for(message_id, self.ids().count(message_id))
        return web.json_response({"status": status}, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/mintsoft", self._post)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    target = Target()
    yield target
    await target.stop()


def _count(name: str, outcome: str) -> float:
    return metrics.WORKER_MESSAGES.labels(name, outcome)._value.get()


async def test_2xx_is_acked_with_the_contract_headers_and_the_body_unchanged(
    probe: BrokerProbe, exchange: str, target: Target
) -> None:
    await target.start()
    sub = subscriber()
    forwarder = Forwarder(sub.name, target.url, timeout=5)
    body = body_for("despatched", 0)
    async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
        sent = await publish(probe, exchange, "despatched", body)
        await wait_until(lambda: _count(sub.name, "acked") == 1)
    await forwarder.close()
    [(headers, received)] = target.requests
    assert received == body
    assert headers["X-Mintsoft-Event"] == "despatched"
    assert headers["X-Message-Id"] == sent
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Request-Id"].startswith("req-")
    assert await probe.count(sub.name) == 0


async def test_500_then_200_is_retried_then_acked(
    probe: BrokerProbe, exchange: str, target: Target
) -> None:
    target.status_for = lambda message_id, n: 500 if n == 1 else 200
    await target.start()
    sub = subscriber(tries=2)
    forwarder = Forwarder(sub.name, target.url, timeout=5)
    async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
        sent = await publish(probe, exchange, "cancelled", body_for("cancelled", 0))
        await wait_until(lambda: _count(sub.name, "acked") == 1)
    await forwarder.close()
    assert target.ids() == [sent, sent]
    assert await probe.count(dlq_name(sub.name)) == 0


async def test_400_is_dead_lettered_at_once(
    probe: BrokerProbe, exchange: str, target: Target
) -> None:
    target.status_for = lambda message_id, n: 400
    await target.start()
    sub = subscriber(tries=3)
    forwarder = Forwarder(
        sub.name,
        target.url + "?token=s3cret-in-url",
        timeout=5,
        headers={"Authorization": "Bearer s3cret-header"},
    )
    async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
        sent = await publish(probe, exchange, "split", body_for("split", 0))
        await wait_until(lambda: _count(sub.name, "dead_lettered") == 1)
    await forwarder.close()
    assert target.ids() == [sent]
    assert target.requests[0][0]["Authorization"] == "Bearer s3cret-header"
    [dead] = await probe.get_all(dlq_name(sub.name), expected=1)
    error = (dead.header.properties.headers or {})["x-error"]
    error = error.decode() if isinstance(error, bytes) else error
    assert error.startswith("PermanentError: ") and "answered 400" in error
    assert "s3cret" not in error


async def test_target_down_pauses_consumption_and_everything_arrives_when_it_is_back(
    probe: BrokerProbe, exchange: str, target: Target
) -> None:
    sub = subscriber(tries=3, delays=(200, 200), prefetch=4)
    forwarder = Forwarder(sub.name, target.url, timeout=2)
    forwarder.breaker.max_wait = 0.5  # probe often, so the test does not wait long
    retry_queues = [retry_queue_name(sub.name, i) for i in range(2)]
    open_gauge = metrics.FORWARDER_CIRCUIT_OPEN.labels(sub.name)

    async def waiting() -> int:
        counts = [await probe.count(q) for q in (sub.name, *retry_queues)]
        return sum(counts)

    async def consumers() -> int:
        channel = await probe._chan()
        ok = await channel.queue_declare(sub.name, passive=True)
        return int(ok.consumer_count or 0)

    async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
        sent = [
            await publish(probe, exchange, "despatched", body_for("despatched", i))
            for i in range(8)
        ]
        await wait_until(lambda: open_gauge._value.get() == 1)
        await wait_until(lambda: _equals(consumers, 0))
        await wait_until(lambda: _equals(waiting, 8))
        await asyncio.sleep(1.0)  # down a while longer: still paused, still all kept
        assert await consumers() == 0
        assert await waiting() == 8
        assert await probe.count(dlq_name(sub.name)) == 0

        await target.start()
        await wait_until(lambda: set(target.ids()) == set(sent), timeout=15)
        await wait_until(lambda: _count(sub.name, "acked") == 8)
        assert open_gauge._value.get() == 0
    await forwarder.close()
    assert Counter(target.ids()) == Counter(sent)
    assert await probe.count(dlq_name(sub.name)) == 0
    assert await waiting() == 0


async def _equals(read: Callable[[], Awaitable[int]], value: int) -> bool:
    return await read() == value


async def test_a_huge_answer_is_not_read_beyond_what_is_kept() -> None:
    """A target answering 300 MB (generated lazily): the forwarder keeps 200 bytes and
    closes, so the target gets to send only what fits in the socket buffers."""
    sent = 0
    finished = asyncio.Event()

    async def huge(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        await request.read()
        response = web.StreamResponse(status=500)
        response.content_length = 300 * 1024 * 1024
        await response.prepare(request)
        chunk = b"x" * (256 * 1024)
        try:
            while sent < 300 * 1024 * 1024:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            finished.set()
        return response

    app = web.Application()
    app.router.add_post("/huge", huge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    forwarder = Forwarder("huge", f"http://127.0.0.1:{port}/huge", timeout=60)
    message = Message(event="despatched", body=b"{}", message_id="m-huge", headers={})
    try:
        with pytest.raises(ForwardFailed) as failed:
            await forwarder(message)
        assert "answered 500: xxx" in str(failed.value)
        await asyncio.wait_for(finished.wait(), 30)
        assert sent < 32 * 1024 * 1024, f"the target sent {sent} bytes"
    finally:
        await forwarder.close()
        await runner.cleanup()
