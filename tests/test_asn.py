"""ASN booked-in end to end (contract section 11): the receiver's route, the routing key and
headers, a subscriber that names it, "*" leaving it out, and the archive keeping it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from bridge.archive.reader import ArchiveQuery, find
from bridge.core.contract import ASN_BOOKED_IN, HEADER_ASN_ID, routing_key, webhook_envelope
from bridge.receiving.spool import Spool
from bridge.worker.message import Message
from bridge.worker.subscribers import parse_subscribers
from tests.conftest import AMQP_URL, API_KEY, BridgeFactory, BrokerProbe, fixture_body
from tests.worker_helpers import running_worker, subscriber, wait_until


async def test_an_asn_webhook_reaches_its_subscriber_byte_for_byte_and_not_a_star_one(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    bridge = await make_bridge(archive=True)
    probe.track(queues=(f"{exchange}.archive",))
    asn_sub = subscriber(events=(ASN_BOOKED_IN,))
    star_sub = subscriber(events=("*",))
    asn_seen: list[Message] = []
    star_seen: list[Message] = []

    async def on_asn(message: Message) -> None:
        asn_seen.append(message)

    async def on_any(message: Message) -> None:
        star_seen.append(message)

    body = fixture_body(ASN_BOOKED_IN)
    async with running_worker(
        probe, exchange, [asn_sub, star_sub], {asn_sub.name: on_asn, star_sub.name: on_any}
    ):
        answer = await bridge.client.post(
            f"/webhooks/{ASN_BOOKED_IN}/", params={"apikey": API_KEY}, data=body
        )
        assert answer.status == 200, await answer.text()
        asn_id = (await answer.json())["message_id"]
        # An order after it: once "*" has that, the ASN (routed first) would have come first.
        order = await bridge.client.post(
            "/webhooks/despatched", params={"APIKEY": API_KEY}, data=fixture_body("despatched")
        )
        assert order.status == 200
        await wait_until(lambda: asn_seen and star_seen)

    [message] = asn_seen
    assert message.body == body
    assert message.message_id == asn_id
    assert message.event == ASN_BOOKED_IN
    assert message.routing_key == routing_key(ASN_BOOKED_IN) == "asn.booked-in"
    assert message.headers[HEADER_ASN_ID] == "3107"
    assert message.headers["x-client-id"] == "12" and message.headers["x-warehouse-id"] == "3"
    assert "x-order-id" not in message.headers
    assert [m.event for m in star_seen] == ["despatched"]

    now = datetime.now(UTC)
    query = ArchiveQuery(since=now - timedelta(minutes=5), until=now + timedelta(minutes=1))
    archived = [w async for w in find((AMQP_URL,), exchange, query)]
    assert [(w.event, w.routing_key) for w in archived] == [
        (ASN_BOOKED_IN, "asn.booked-in"),
        ("despatched", "order.despatched"),
    ]
    assert archived[0].message_id == asn_id


async def test_an_asn_webhook_needs_the_same_credentials(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    answer = await bridge.client.post(
        f"/webhooks/{ASN_BOOKED_IN}", data=fixture_body(ASN_BOOKED_IN)
    )
    assert answer.status == 401
    assert await answer.json() == {"error": "unauthorized"}


def test_subscribers_name_it_and_star_means_the_order_events() -> None:
    [named, star] = parse_subscribers(
        {
            "subscriber": [
                {"name": "wms", "events": ["asn-booked-in", "despatched"], "handler": "m:f"},
                {"name": "erp", "events": ["*"], "handler": "m:f"},
            ]
        }
    )
    keys = {b.routing_key for b in named.topology("ex").bindings if b.exchange == "ex"}
    assert keys == {"asn.booked-in", "order.despatched"}
    keys = {b.routing_key for b in star.topology("ex").bindings if b.exchange == "ex"}
    assert keys == {"order.despatched", "order.cancelled", "order.delivered", "order.split"}


@pytest.mark.parametrize("both", [["*", "asn-booked-in"], ["asn-booked-in", "*"]])
def test_star_and_asn_together_take_everything(both: list[str]) -> None:
    [sub] = parse_subscribers({"subscriber": [{"name": "all", "events": both, "handler": "m:f"}]})
    keys = {b.routing_key for b in sub.topology("ex").bindings if b.exchange == "ex"}
    assert len(keys) == 5 and "asn.booked-in" in keys


async def test_a_spooled_asn_webhook_is_drained_to_its_routing_key_with_its_headers(
    tmp_path: Path, exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    queue = await probe.bind_queue(exchange, "asn.#")
    body = fixture_body(ASN_BOOKED_IN)
    kept = webhook_envelope(ASN_BOOKED_IN, body, orjson.loads(body), "req-asn", time.time())
    path = str(tmp_path / "spool.sqlite3")
    spool = Spool(path, 10_000_000)
    await spool.open()
    await spool.append(kept)
    await spool.close()

    await make_bridge(spool_path=path)  # drains what the spool holds on start
    [message] = await probe.get_all(queue, expected=1, timeout=15)
    assert message.body == body
    assert message.delivery.routing_key == "asn.booked-in"
    assert message.header.properties.message_id == kept.message_id
    assert (message.header.properties.headers or {})[HEADER_ASN_ID] == "3107"
