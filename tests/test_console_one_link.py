"""The console keeps one broker link for all its pages (issue 20): the overview, a
subscriber, its dead letters (listed, opened, replayed, discarded), an order lookup, an
archived webhook, an archive replay and a pause all go over the one connection it opens at
start, leave no channel open behind them, and a link that dropped is opened again (once)."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiormq
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge import PermanentError
from bridge.amqp.connection import borrow
from bridge.amqp.topology import archive_name, control_name, dlq_name
from bridge.console.app import build_app
from bridge.console.state import Console
from bridge.core.records import deliveries_stream
from bridge.worker.message import Message
from tests.conftest import API_KEY, BridgeFactory, BrokerProbe
from tests.console_helpers import console_state, sign_in
from tests.worker_helpers import body_for, running_worker, subscriber, wait_until

ROWS = re.compile(r'<tr data-id="([0-9a-f]{32})">')
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
WEBHOOK_LINK = re.compile(r'href="(/orders/webhooks/\d+\?[^"]+)"')


@asynccontextmanager
async def counted_connections(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """Every AMQP connection opened in this process meanwhile, by its connection name."""
    opened: list[str] = []
    connect = aiormq.connect

    async def counting(url: Any, *args: Any, **kwargs: Any) -> Any:
        properties = kwargs.get("client_properties") or {}
        opened.append(str(properties.get("connection_name", "(unnamed)")))
        return await connect(url, *args, **kwargs)

    monkeypatch.setattr(aiormq, "connect", counting)
    yield opened


async def _every_page_and_action(
    client: TestClient[Any, Any], console: Console, csrf: str, name: str
) -> None:
    """Loads each page and takes each action once, checking each answered."""

    async def page(path: str) -> str:
        answer = await client.get(path)
        text = await answer.text()
        assert answer.status == 200, (path, text)
        assert "data-could-not-look" not in text, (path, text)
        return text

    await page("/")
    await page("/overview/live")
    await page(f"/subscribers/{name}")
    base = f"/subscribers/{name}/dead-letters"
    ids = ROWS.findall(await page(base))
    assert len(ids) >= 2, ids
    await page(f"{base}/{ids[0]}")
    for action, picked in (("replay", ids[0]), ("discard", ids[1])):
        done = await client.post(
            f"{base}/{action}", data={"csrf": csrf, "id": picked, "confirmed": "1"}
        )
        assert "1 dead letter" in await done.text(), action
    everything = await client.post(
        f"{base}/replay", data={"csrf": csrf, "all": "1", "count": "1", "confirmed": "1"}
    )
    assert everything.status == 200, await everything.text()
    order = await page("/orders?q=20285")
    link = WEBHOOK_LINK.search(order)
    assert link is not None, order
    await page(html.unescape(link.group(1)))
    dry = await client.post("/replay", data={"csrf": csrf, "since": "1h", "to": name})
    counted = await dry.text()
    assert dry.status == 200 and 'id="replay-send"' in counted, counted
    # The confirmation sends back what the count fixed (its window, its target), for one.
    form = counted.split('id="replay-send"')[0].rsplit("<form", 1)[1]
    fixed = {name: html.unescape(value) for name, value in HIDDEN.findall(form)}
    sent = await client.post(
        "/replay", data=fixed | {"confirmed": "1", "count": "1"}, allow_redirects=False
    )
    assert sent.status == 303, await sent.text()
    job = console.jobs.get(sent.headers["Location"].rsplit("/", 1)[-1])
    assert job is not None
    await wait_until(lambda: job.finished, timeout=30)
    assert job.error is None, job.error
    for change in ("pause", "resume"):
        changed = await client.post(f"/subscribers/{name}/{change}", data={"csrf": csrf})
        assert changed.status == 200, await changed.text()


async def test_every_page_and_action_goes_over_the_one_link_and_it_comes_back_once_dropped(
    probe: BrokerProbe,
    exchange: str,
    make_bridge: BridgeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sub = subscriber(tries=1, delays=())

    async def handler(message: Message) -> None:
        raise PermanentError("ERP refused: 500")

    bridge = await make_bridge(archive=True)
    probe.track(
        queues=(archive_name(exchange), deliveries_stream(exchange), control_name(sub.name))
    )
    console = console_state(exchange, [sub])
    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        for n in range(10):  # distinct webhooks of one order, each dead-lettered
            answer = await bridge.client.post(
                "/webhooks/despatched", params={"APIKEY": API_KEY}, data=body_for("despatched", n)
            )
            assert answer.status == 200, await answer.text()

        async def all_dead() -> bool:
            return await probe.count(dlq_name(sub.name)) == 10

        await wait_until(all_dead, timeout=30)
    # The worker gone, the DLQ holds still: each pass takes three of its dead letters.
    async with (
        counted_connections(monkeypatch) as opened,
        TestClient(TestServer(build_app(console))) as client,
    ):
        csrf = await sign_in(client)
        await _every_page_and_action(client, console, csrf, sub.name)
        await _every_page_and_action(client, console, csrf, sub.name)
        assert opened == ["mintsoft-bridge console"]
        connection = console.broker.link.connection
        assert connection is not None
        # Only the link's own channel and the overview's reading channel stay open.
        assert len(connection.channels) <= 2, connection.channels

        await connection.close()  # the link dropped: the next pages open it again
        await _every_page_and_action(client, console, csrf, sub.name)
        assert opened == ["mintsoft-bridge console"] * 2


def test_no_console_module_hands_the_broker_urls_to_a_reader() -> None:
    """Only the console's state reads ``amqp_urls`` (to build the link and mask passwords):
    a page handing them on would open a connection of its own."""
    console = Path(build_app.__code__.co_filename).parent
    readers = [
        f"{path.name}:{n}"
        for path in sorted(console.glob("*.py"))
        if path.name not in ("state.py", "serve.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "amqp_urls" in line or "connect_once" in line
    ]
    assert readers == []


class _Stuck:
    """A channel (and its connection) whose close never gets an answer."""

    is_closed = False

    async def close(self, *_args: Any) -> None:
        await asyncio.Event().wait()

    async def channel(self, **_options: Any) -> _Stuck:
        return self


class _Lender:
    def __init__(self) -> None:
        self.renewed = 0

    async def connection(self) -> Any:
        return _Stuck()

    def renew(self) -> None:
        self.renewed += 1


async def test_a_lent_connection_whose_channel_will_not_close_is_renewed() -> None:
    """A channel that took dead letters unacked gives them back when it closes; one that
    does not close in time holds them until its connection goes: the lender renews it."""
    lender = _Lender()
    lease = await borrow(lender)
    await lease.channel(publisher_confirms=False)
    await lease.release()
    assert lender.renewed == 1
