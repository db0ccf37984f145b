"""The subscriber page and its pause / resume (contract section 9), against a real broker and
an in-process worker: the state line says what the subscriber does and why; the POSTs need
sign-in and the CSRF token; a pause stops the worker while the queue grows, a resume drains
it."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bridge.amqp.topology import declare_topology
from bridge.console.app import build_app
from bridge.console.broker import ConsoleBroker
from bridge.worker.message import Message
from tests.conftest import AMQP_URL, BrokerProbe
from tests.console_helpers import console_state, sign_in
from tests.support.rabbit_node import free_port
from tests.worker_helpers import (
    body_for,
    publish,
    running_worker,
    subscriber,
    track_subscriber,
    wait_until,
)

_STATE = re.compile(r'data-state="([a-z-]+)"')


async def _state(client: TestClient[Any, Any], name: str) -> tuple[str, str]:
    """(state kind, page) of the subscriber page."""
    answer = await client.get(f"/subscribers/{name}")
    assert answer.status == 200
    html = await answer.text()
    found = _STATE.search(html)
    assert found is not None
    return found.group(1), html


async def _is(client: TestClient[Any, Any], name: str, kind: str) -> bool:
    return (await _state(client, name))[0] == kind


async def test_pause_and_resume_need_sign_in_and_the_csrf_token(exchange: str) -> None:
    sub = subscriber(name="erp")
    app = build_app(console_state(exchange, [sub]))
    async with TestClient(TestServer(app)) as client:
        signed_out: Any = await client.post("/subscribers/erp/pause", allow_redirects=False)
        assert signed_out.status == 403
        page: Any = await client.get("/subscribers/erp", allow_redirects=False)
        assert page.status == 303 and page.headers["Location"].startswith("/login")
        csrf = await sign_in(client)
        for path in ("/subscribers/erp/pause", "/subscribers/erp/resume"):
            no_token: Any = await client.post(path, allow_redirects=False)
            assert no_token.status == 403
            assert "CSRF" in await no_token.text()
        unknown: Any = await client.post(
            "/subscribers/nope/pause", data={"csrf": csrf}, allow_redirects=False
        )
        assert unknown.status == 404
        assert (await client.get("/subscribers/nope")).status == 404


async def test_pause_stops_the_worker_while_the_queue_grows_and_resume_drains_it(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber()
    handled: list[str] = []

    async def handler(message: Message) -> None:
        handled.append(message.message_id)

    app = build_app(console_state(exchange, [sub]))
    async with (
        running_worker(probe, exchange, [sub], {sub.name: handler}),
        TestClient(TestServer(app)) as client,
    ):
        csrf = await sign_in(client)
        await wait_until(lambda: _is(client, sub.name, "consuming"))
        answer: Any = await client.post(
            f"/subscribers/{sub.name}/pause", data={"csrf": csrf}, allow_redirects=False
        )
        assert answer.status == 303, await answer.text()
        kind, html = await _state(client, sub.name)
        assert kind == "paused" and "Paused by" in html and 'id="resume"' in html
        overview = await (await client.get("/overview/live")).text()
        assert 'data-state="paused"' in overview

        async def stopped() -> bool:
            channel = await probe._chan()
            ok = await channel.queue_declare(sub.name, passive=True)
            return ok.consumer_count == 0

        await wait_until(stopped, timeout=7)
        for n in range(5):
            await publish(probe, exchange, "despatched", body_for("despatched", n))
        await wait_until(lambda: _ready_on_page(client, sub.name, 5))
        assert handled == []

        answer = await client.post(
            f"/subscribers/{sub.name}/resume", data={"csrf": csrf}, allow_redirects=False
        )
        assert answer.status == 303
        await wait_until(lambda: len(handled) == 5, timeout=10)
        await wait_until(lambda: _is(client, sub.name, "consuming"))
        assert 'id="pause"' in (await _state(client, sub.name))[1]


async def _ready_on_page(client: TestClient[Any, Any], name: str, count: int) -> bool:
    html = (await _state(client, name))[1]
    return f'data-figure="ready">{count}<' in html


async def test_the_page_tells_no_worker_from_a_target_that_is_down(
    probe: BrokerProbe, exchange: str
) -> None:
    # A forwarder to a port nobody listens on: its breaker opens after a few failures.
    sub = subscriber(tries=1, delays=(60_000,), forward_url=f"http://127.0.0.1:{free_port()}/")
    track_subscriber(probe, exchange, sub)
    await declare_topology((AMQP_URL,), sub.topology(exchange))
    app = build_app(console_state(exchange, [sub]))
    async with TestClient(TestServer(app)) as client:
        await sign_in(client)
        kind, html = await _state(client, sub.name)
        assert kind == "no-worker" and "No worker running" in html
        async with running_worker(probe, exchange, [sub], {}):
            for n in range(8):
                await publish(probe, exchange, "despatched", body_for("despatched", n))
            await wait_until(lambda: _is(client, sub.name, "target-down"), timeout=20)
            overview = await (await client.get("/overview/live")).text()
            assert "Waiting for its target, which is down" in overview


async def test_a_broker_that_cannot_be_reached_is_said_not_shown_as_a_state(
    exchange: str,
) -> None:
    console = console_state(exchange, [subscriber(name="erp")])
    console.amqp_urls = (f"amqp://guest:guest@127.0.0.1:{free_port()}/",)
    console.broker = ConsoleBroker(console.amqp_urls)
    async with TestClient(TestServer(build_app(console))) as client:
        await sign_in(client)
        answer = await client.get("/subscribers/erp")
        html = await answer.text()
        assert answer.status == 200 and "data-could-not-look" in html
        assert "data-state" not in html and 'id="pause"' not in html
