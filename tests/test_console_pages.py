"""The console's pages against a real broker and worker, without a browser: the overview
counts, dead letters listed, opened, replayed (with a confirmation) and discarded; and no
page or log line ever shows an API key or an Authorization value."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge import PermanentError
from bridge.amqp.topology import dlq_name
from bridge.console import dead_letters
from bridge.console.app import build_app
from bridge.console.queues import QueueStat, SubscriberStat
from bridge.console.views import mask_text
from bridge.worker.message import Message
from tests.conftest import API_KEY, AUTH_HEADER, BridgeFactory, BrokerProbe, fixture_body
from tests.console_helpers import archive_despatched, console_state, sign_in
from tests.worker_helpers import body_for, publish, running_worker, subscriber, wait_until

SECRETS = (API_KEY, AUTH_HEADER, AUTH_HEADER.split()[1])


def _ids(html: str) -> list[str]:
    return re.findall(r'name="id" value="([0-9a-f]{32})"', html)


async def test_dead_letters_listed_opened_replayed_and_discarded_without_showing_secrets(
    probe: BrokerProbe,
    exchange: str,
    make_bridge: BridgeFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    sub = subscriber(tries=1, delays=(60_000,))
    healthy = False
    handled: list[str] = []

    async def handler(message: Message) -> None:
        if not healthy:
            # An error that quotes credentials, as a careless handler's might.
            raise PermanentError(
                f"ERP refused POST /x?APIKEY={API_KEY} (Authorization: {AUTH_HEADER})"
            )
        handled.append(message.message_id)

    bridge = await make_bridge()
    app = build_app(console_state(exchange, [sub]))
    async with (
        running_worker(probe, exchange, [sub], {sub.name: handler}),
        TestClient(TestServer(app)) as client,
    ):
        for event, auth in (("despatched", {"APIKEY": API_KEY}), ("cancelled", {})):
            answer = await bridge.client.post(
                f"/webhooks/{event}",
                params=auth,
                data=fixture_body(event),
                headers={"Content-Type": "application/json"}
                | ({} if auth else {"Authorization": AUTH_HEADER}),
            )
            assert answer.status == 200, await answer.text()

        async def dead(n: int) -> bool:
            return await probe.count(dlq_name(sub.name)) == n

        await wait_until(lambda: dead(2))
        csrf = await sign_in(client)
        pages: list[str] = []

        overview = await (await client.get("/")).text()
        pages.append(overview)
        assert re.search(r'data-figure="dead" class="bad"><a [^>]+>2<', overview), overview

        listing = await client.get(f"/subscribers/{sub.name}/dead-letters")
        pages.append(await listing.text())
        ids = _ids(pages[-1])
        assert len(ids) == 2
        assert "despatched" in pages[-1] and "cancelled" in pages[-1]
        # Paged: one per page here, each page its own dead letter.
        monkeypatch.setattr(dead_letters, "PAGE_SIZE", 1)
        first = await (await client.get(f"/subscribers/{sub.name}/dead-letters")).text()
        second = await (await client.get(f"/subscribers/{sub.name}/dead-letters?page=2")).text()
        assert "Page 1 of 2" in first and 'rel="next"' in first and 'rel="prev"' in second
        assert _ids(first) + _ids(second) == ids
        monkeypatch.undo()
        filtered = await (
            await client.get(f"/subscribers/{sub.name}/dead-letters?event=cancelled")
        ).text()
        assert len(_ids(filtered)) == 1

        one = await client.get(f"/subscribers/{sub.name}/dead-letters/{ids[0]}")
        pages.append(await one.text())
        assert one.status == 200
        assert "PermanentError" in pages[-1] and "&#34;ID&#34;" in pages[-1]  # pretty JSON

        # Replay one: a confirmation first, then the copy, and the handler gets it.
        healthy = True
        confirm = await client.post(
            f"/subscribers/{sub.name}/dead-letters/replay", data={"csrf": csrf, "id": ids[0]}
        )
        pages.append(await confirm.text())
        assert "Replay 1 dead letter to" in pages[-1]
        done = await client.post(
            f"/subscribers/{sub.name}/dead-letters/replay",
            data={"csrf": csrf, "id": ids[0], "confirmed": "1"},
        )
        pages.append(await done.text())
        assert "Replayed 1 dead letter" in pages[-1]
        await wait_until(lambda: handled == [ids[0]])
        await wait_until(lambda: dead(1))

        # Discard the other, after its confirmation.
        ask = await client.post(
            f"/subscribers/{sub.name}/dead-letters/discard", data={"csrf": csrf, "id": ids[1]}
        )
        pages.append(await ask.text())
        gone = await client.post(
            f"/subscribers/{sub.name}/dead-letters/discard",
            data={"csrf": csrf, "id": ids[1], "confirmed": "1"},
        )
        pages.append(await gone.text())
        assert "Discarded 1 dead letter" in pages[-1]
        await wait_until(lambda: dead(0))
        empty = await (await client.get(f"/subscribers/{sub.name}/dead-letters")).text()
        assert 'id="dlq-empty"' in empty
        pages.append(await (await client.get("/orders?q=20285")).text())
        assert handled == [ids[0]]

    # The console's own log lines (the receiver and worker under test log on their own).
    logged = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("bridge.console")
    )
    shown = "\n".join(pages) + "\n" + logged
    for secret in SECRETS:
        assert secret not in shown
    assert "replayed 1 dead letter" in logged and "discarded 1 dead letter" in logged


def test_masking_of_credentials_in_text() -> None:
    text = mask_text(f"GET /w?APIKEY={API_KEY}&x=1 Authorization: {AUTH_HEADER}, token=abc")
    assert API_KEY not in text and AUTH_HEADER.split()[1] not in text and "abc" not in text
    assert "x=1" in text


async def test_unknown_subscriber_is_a_404_page(exchange: str) -> None:
    app = build_app(console_state(exchange, [subscriber(name="erp")]))
    async with TestClient(TestServer(app)) as client:
        await sign_in(client)
        answer: Any = await client.get("/subscribers/nope/dead-letters")
        assert answer.status == 404
        assert "No subscriber" in await answer.text()


async def test_an_archived_webhook_page_shows_its_body_but_no_key(
    probe: BrokerProbe, exchange: str, make_bridge: BridgeFactory
) -> None:
    bridge = await make_bridge(archive=True)
    probe.track(queues=(exchange + ".archive",))
    await archive_despatched(bridge)
    app = build_app(console_state(exchange, []))
    async with TestClient(TestServer(app)) as client:
        await sign_in(client)
        found = await (await client.get("/orders?q=SO-20285&since=1h")).text()
        links = re.findall(r'href="(/orders/webhooks/[^"]+)"', found)
        assert len(links) == 1, found
        page = await (await client.get(links[0].replace("&amp;", "&"))).text()
    assert "&#34;OrderNumber&#34;: &#34;SO-20285&#34;" in page
    assert "x-request-id" in page  # headers shown
    for secret in SECRETS:
        assert secret not in found and secret not in page


async def test_replay_all_confirmed_with_0_moves_nothing_and_a_bad_count_is_400(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(tries=1, delays=())
    failed: list[str] = []

    async def handler(message: Message) -> None:
        failed.append(message.message_id)
        raise PermanentError("ERP says no")

    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        for i in range(2):
            await publish(probe, exchange, "despatched", body_for("despatched", i))
        await wait_until(lambda: _count_is(probe, dlq_name(sub.name), 2))
    # The worker is gone (its queues stay until the test ends): a replayed letter would
    # wait in the subscriber's queue.
    app = build_app(console_state(exchange, [sub]))
    async with TestClient(TestServer(app)) as client:
        csrf = await sign_in(client)
        url = f"/subscribers/{sub.name}/dead-letters/replay"
        # The DLQ was empty when the confirmation was shown: "Replay 0" means none.
        zero = await client.post(
            url, data={"csrf": csrf, "all": "1", "count": "0", "confirmed": "1"}
        )
        assert zero.status == 200, await zero.text()
        assert "Replayed 0 dead letters" in await zero.text()
        assert await probe.count(sub.name) == 0
        assert await probe.count(dlq_name(sub.name)) == 2
        for bad in ("abc", "-1", "", "1.5", "²", "9" * 5000):
            answer = await client.post(
                url, data={"csrf": csrf, "all": "1", "count": bad, "confirmed": "1"}
            )
            assert answer.status == 400, (bad, answer.status)
        assert await probe.count(sub.name) == 0
        assert await probe.count(dlq_name(sub.name)) == 2


async def _count_is(probe: BrokerProbe, queue: str, n: int) -> bool:
    return await probe.count(queue) == n


async def test_an_idle_subscriber_shows_no_messages_in_flight_only_its_limit(
    probe: BrokerProbe, exchange: str
) -> None:
    # Two consumers of prefetch 4, nothing to do: RabbitMQ does not report unacked messages
    # over AMQP, so the page must not show the bound (8) as if 8 were in flight.
    sub = subscriber(prefetch=4)

    async def handler(message: Message) -> None:
        pass

    app = build_app(console_state(exchange, [sub]))
    async with (
        running_worker(probe, exchange, [sub], {sub.name: handler}),
        running_worker(probe, exchange, [sub], {sub.name: handler}),
        TestClient(TestServer(app)) as client,
    ):
        await sign_in(client)

        async def two_consumers() -> bool:
            html = await (await client.get("/overview/live")).text()
            return 'data-figure="consumers">2<' in html

        await wait_until(two_consumers)
        card = await (await client.get("/overview/live")).text()
        page = await (await client.get(f"/subscribers/{sub.name}")).text()
        for html in (card, page):
            assert "≤" not in html and "at most 8 in flight" not in html, html
            in_flight = re.search(r'data-figure="in-flight"[^>]*>([^<]*)<', html)
            assert in_flight is not None and in_flight.group(1).strip() == "-", html
            limit = re.search(r'data-figure="in-flight-limit"[^>]*>([^<]*)<', html)
            assert limit is not None and limit.group(1).strip() == "limit 8", html


def test_an_ordered_subscribers_in_flight_limit_is_one_per_partition_consumer() -> None:
    # Each partition's channel takes one message at a time, whatever `prefetch` says.
    sub = subscriber(ordered=True, partitions=4)
    stat = SubscriberStat(
        sub, QueueStat("x.partition.*", 0, 4), (), QueueStat(dlq_name(sub.name), 0, 0)
    )
    assert stat.in_flight_bound == 4
