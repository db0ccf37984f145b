"""The dead-letters page against a real broker and worker, without a browser: the same order
on every load and across pages (a quorum DLQ hands requeued messages back in no set order),
grouped by error with counts, "discard all matching" confirmed with the exact count and
leaving a record per message; and pages that could not ask the broker saying so instead of
"nothing"."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge import PermanentError
from bridge.amqp.topology import deliveries_stream, dlq_name
from bridge.console import dead_letters
from bridge.console.app import build_app
from bridge.console.state import Console
from bridge.core.records import Outcome, Source
from bridge.worker.message import Message
from bridge.worker.subscribers import Subscriber
from tests.conftest import BrokerProbe
from tests.console_helpers import console_state, sign_in
from tests.support.rabbit_node import free_port
from tests.test_records_produced import read_records
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until

ROWS = re.compile(r'<tr data-id="([0-9a-f]{32})">')
GROUP = re.compile(
    r'data-figure="group-count">(\d+)</b> × <a href="[^"]*" class="err"[^>]*>([^<]+)<'
)


def _ids(html: str) -> list[str]:
    return ROWS.findall(html)


@asynccontextmanager
async def _dead(
    probe: BrokerProbe, exchange: str, despatched: int, cancelled: int
) -> AsyncIterator[tuple[Subscriber, list[str]]]:
    """A subscriber whose worker dead-letters every webhook at once: despatches with one
    error, cancellations with another."""
    sub = subscriber(tries=1, delays=())

    async def handler(message: Message) -> None:
        raise PermanentError("ERP refused: 500" if message.event == "despatched" else "no route")

    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        ids = [
            await publish(probe, exchange, "despatched", body_for("despatched", i))
            for i in range(despatched)
        ] + [
            await publish(probe, exchange, "cancelled", body_for("cancelled", i))
            for i in range(cancelled)
        ]

        async def all_dead() -> bool:
            return await probe.count(dlq_name(sub.name)) == len(ids)

        await wait_until(all_dead, timeout=30)
        yield sub, ids


async def test_dead_letters_keep_one_order_over_reloads_and_pages_and_group_by_error(
    probe: BrokerProbe, exchange: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dead_letters, "PAGE_SIZE", 10)
    async with (
        _dead(probe, exchange, despatched=24, cancelled=7) as (sub, ids),
        TestClient(TestServer(build_app(console_state(exchange, [sub])))) as client,
    ):
        await sign_in(client)
        url = f"/subscribers/{sub.name}/dead-letters"

        async def every_page() -> list[str]:
            seen: list[str] = []
            for page in range(1, 5):
                seen += _ids(await (await client.get(f"{url}?page={page}")).text())
            return seen

        first = await every_page()
        assert sorted(first) == sorted(ids)  # each once, none twice across the 4 pages
        for _ in range(3):
            assert await every_page() == first

        listing = await (await client.get(url)).text()
        group = re.search(r'href="([^"]*)" class="err"[^>]*>PermanentError: no route<', listing)
        assert group is not None
        grouped = await (await client.get(url + group.group(1).replace("&amp;", "&"))).text()
        assert sorted(_ids(grouped)) == sorted(ids[24:])
        assert GROUP.findall(listing) == [
            ("24", "PermanentError: ERP refused: 500"),
            ("7", "PermanentError: no route"),
        ]
        only = await (await client.get(url, params={"error": "PermanentError: no route"})).text()
        assert 'data-figure="matching">7<' in only
        assert len(_ids(only)) == 7 and set(_ids(only)) <= set(ids[24:])


async def test_discard_all_matching_a_filter_confirms_the_exact_count(
    probe: BrokerProbe, exchange: str
) -> None:
    probe.track(queues=(deliveries_stream(exchange),))
    async with (
        _dead(probe, exchange, despatched=3, cancelled=5) as (sub, ids),
        TestClient(TestServer(build_app(console_state(exchange, [sub])))) as client,
    ):
        csrf = await sign_in(client)
        url = f"/subscribers/{sub.name}/dead-letters/discard"
        form = {"csrf": csrf, "all": "1", "event": "cancelled", "error": "", "q": ""}
        confirm = await (await client.post(url, data=form)).text()
        assert "Discard 5 dead letters of" in confirm
        # The safe button is the one focused, and the rows are named by order and event.
        assert re.search(r'id="cancel" autofocus', confirm), confirm
        assert "autofocus" not in confirm.split('id="confirm"')[1].split(">")[0]
        assert confirm.count("cancelled <code") == 5 and "despatched <code" not in confirm
        picked = re.findall(r'name="id" value="([0-9a-f]{32})"', confirm)
        assert sorted(picked) == sorted(ids[3:])

        done = await client.post(url, data={"csrf": csrf, "confirmed": "1", "id": picked})
        assert "Discarded 5 dead letters" in await done.text()
        left = await (await client.get(f"/subscribers/{sub.name}/dead-letters")).text()
        assert sorted(_ids(left)) == sorted(ids[:3])

    def five_discarded(records: list[Any]) -> bool:
        return len([r for r in records if r.outcome is Outcome.DISCARDED]) >= 5

    records = await read_records(probe, exchange, five_discarded)
    discarded = [r for r in records if r.outcome is Outcome.DISCARDED]
    assert sorted(r.message_id for r in discarded) == sorted(ids[3:])
    assert {(r.source, r.subscriber) for r in discarded} == {(Source.CONSOLE, sub.name)}


def _unreachable(console: Console) -> Console:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    return replace(console, amqp_urls=(closed,))


async def test_a_broker_that_cannot_be_reached_is_could_not_look_never_nothing(
    exchange: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.console import broker

    monkeypatch.setattr(broker, "WAIT_SECONDS", 0.5)
    sub = subscriber()
    console = _unreachable(console_state(exchange, [sub]))
    async with TestClient(TestServer(build_app(console))) as client:
        await sign_in(client)
        pages: dict[str, str] = {}
        for path in (
            "/",
            "/overview/live",
            "/orders?q=20291",
            f"/subscribers/{sub.name}/dead-letters",
            f"/subscribers/{sub.name}/dead-letters/{'0' * 32}",
        ):
            answer: Any = await client.get(path)
            pages[path] = await answer.text()
            assert answer.status == 200, (path, pages[path])
            assert "data-could-not-look" in pages[path], (path, pages[path])
        assert "No subscribers" not in pages["/"] and f"sub-{sub.name}" in pages["/"]
        assert "Nothing for 20291 in any" not in pages["/orders?q=20291"]
        assert "No dead letters" not in pages[f"/subscribers/{sub.name}/dead-letters"]
