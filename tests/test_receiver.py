"""The receiver end to end against the real broker: answers, bodies, properties, headers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from hashlib import sha256

import orjson
import pytest

from bridge.core.contract import EVENTS, routing_key
from tests.conftest import API_KEY, AUTH_HEADER, BridgeFactory, BrokerProbe, fixture_body

pytestmark = pytest.mark.both_publish_paths

EXPECTED_ORDER_HEADERS = {
    "despatched": {
        "x-order-id": "20285",
        "x-order-number": "SO-20285",
        "x-client-id": "12",
        "x-warehouse-id": "1",
    },
    "cancelled": {
        "x-order-id": "20286",
        "x-order-number": "SO-20286",
        "x-client-id": "12",
        "x-warehouse-id": "1",
    },
    "delivered": {"x-order-id": "20285"},
    "split": {
        "x-order-id": "20287",
        "x-order-number": "SO-20287",
        "x-client-id": "12",
        "x-warehouse-id": "1",
        "x-split-order-id": "20291",
    },
    "asn-booked-in": {"x-asn-id": "3107", "x-client-id": "12", "x-warehouse-id": "3"},
}


@pytest.mark.parametrize("event", EVENTS)
async def test_each_event_is_published_byte_for_byte_with_contract_properties(
    event: str, exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    queue = await probe.bind_queue(exchange, routing_key(event))
    bridge = await make_bridge()
    body = fixture_body(event)
    before = datetime.now(UTC).replace(microsecond=0)

    response = await bridge.client.post(
        f"/webhooks/{event}",
        params={"APIKEY": API_KEY},
        data=body,
        headers={"Content-Type": "application/json", "X-Request-Id": "req-42"},
    )

    assert response.status == 200
    answer = await response.json()
    expected_id = sha256(event.encode() + b"\n" + body).hexdigest()[:32]
    assert answer == {"status": "accepted", "message_id": expected_id}
    [message] = await probe.get_all(queue, expected=1)
    assert message.body == body
    props = message.header.properties
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.message_type == event
    assert props.app_id == "mintsoft-bridge"
    assert props.message_id == expected_id
    assert props.timestamp is not None and props.timestamp >= before
    headers = dict(props.headers or {})
    headers.pop("x-delivery-count", None)  # added by the quorum queue, not by us
    assert headers.pop("x-event") == event
    assert headers.pop("x-request-id") == "req-42"
    received = datetime.fromisoformat(str(headers.pop("x-received-at")).replace("Z", "+00:00"))
    assert received.tzinfo is not None and abs((received - before).total_seconds()) < 60
    assert headers == EXPECTED_ORDER_HEADERS[event]
    assert message.delivery.routing_key == routing_key(event)


async def test_authorization_header_is_accepted(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    queue = await probe.bind_queue(exchange, "order.#")
    bridge = await make_bridge()
    response = await bridge.client.post(
        "/webhooks/cancelled/", data=b"{}", headers={"Authorization": AUTH_HEADER}
    )
    assert response.status == 200
    assert len(await probe.get_all(queue, expected=1)) == 1


async def test_a_webhook_nobody_subscribed_to_is_kept_in_unrouted_with_the_archive_off(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    bridge = await make_bridge(archive=False)
    body = fixture_body("despatched")
    response = await bridge.client.post(
        "/webhooks/despatched", params={"apikey": API_KEY}, data=body
    )
    assert response.status == 200
    [message] = await probe.get_all(exchange + ".unrouted", expected=1)
    assert message.body == body
    assert message.header.properties.message_id == (await response.json())["message_id"]


async def test_identical_bodies_twice_and_concurrently_get_the_same_id(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    queue = await probe.bind_queue(exchange, "order.despatched")
    bridge = await make_bridge()
    body = fixture_body("despatched")

    async def post() -> tuple[int, str]:
        response = await bridge.client.post(
            "/webhooks/despatched", params={"APIKEY": API_KEY}, data=body
        )
        return response.status, (await response.json())["message_id"]

    first = await post()
    together = await asyncio.gather(*(post() for _ in range(8)))
    answers = [first, *together]
    assert {status for status, _ in answers} == {200}
    assert len({mid for _, mid in answers}) == 1
    messages = await probe.get_all(queue, expected=9)
    assert len(messages) == 9
    assert {m.header.properties.message_id for m in messages} == {first[1]}


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({}, {}),
        ({"APIKEY": "wrong"}, {}),
        ({"APIKEY": API_KEY + " "}, {}),
        ({"APIKEY": API_KEY[:-1]}, {}),
        ({"APIKEY": API_KEY.upper()}, {}),
        ({}, {"Authorization": AUTH_HEADER.lower()}),
        ({}, {"Authorization": AUTH_HEADER.removeprefix("Basic ")}),
        ({}, {"Authorization": "Bearer " + API_KEY}),
        ({"key": API_KEY}, {}),
    ],
    ids=[
        "none",
        "wrong-key",
        "key-trailing-space",
        "key-prefix",
        "key-case",
        "header-case",
        "header-without-scheme",
        "key-as-bearer",
        "other-param",
    ],
)
async def test_missing_wrong_and_near_miss_credentials_get_401_and_publish_nothing(
    params: dict[str, str],
    headers: dict[str, str],
    exchange: str,
    probe: BrokerProbe,
    make_bridge: BridgeFactory,
) -> None:
    queue = await probe.bind_queue(exchange, "#")
    bridge = await make_bridge()
    response = await bridge.client.post(
        "/webhooks/despatched", params=params, headers=headers, data=fixture_body("despatched")
    )
    assert response.status == 401
    assert await response.json() == {"error": "unauthorized"}
    assert await probe.get_all(queue, expected=1, timeout=0.5) == []


async def test_non_json_body_is_400_and_quarantined(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    queue = await probe.bind_queue(exchange, "order.#")
    bridge = await make_bridge()
    body = b"<xml>not json</xml>"
    response = await bridge.client.post("/webhooks/split", params={"APIKEY": API_KEY}, data=body)
    assert response.status == 400
    answer = await response.json()
    assert answer["error"] == "invalid_json"
    [kept] = await probe.get_all(exchange + ".invalid", expected=1)
    assert kept.body == body
    assert kept.delivery.routing_key == "invalid.split"
    assert kept.header.properties.message_id == answer["message_id"]
    assert kept.header.properties.content_type == "application/octet-stream"  # aiohttp's
    assert await probe.get_all(queue, expected=1, timeout=0.3) == []

    # The sender's content type stays on the quarantined copy.
    response = await bridge.client.post(
        "/webhooks/split",
        params={"APIKEY": API_KEY},
        data=b"a=1&b=2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 400
    [kept] = await probe.get_all(exchange + ".invalid", expected=1)
    assert kept.header.properties.content_type == "application/x-www-form-urlencoded"


async def test_unknown_event_other_method_and_large_body_publish_nothing(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    queue = await probe.bind_queue(exchange, "#")
    bridge = await make_bridge(max_body_bytes=1000)
    auth = {"APIKEY": API_KEY}

    unknown = await bridge.client.post("/webhooks/shipped", params=auth, data=b"{}")
    assert unknown.status == 404
    assert (await unknown.json())["error"] == "not_found"

    for method in ("GET", "PUT", "DELETE", "PATCH"):
        other = await bridge.client.request(method, "/webhooks/despatched", params=auth)
        assert other.status == 405
        assert other.headers["Allow"] == "POST"
        assert (await other.json())["error"] == "method_not_allowed"

    large = await bridge.client.post(
        "/webhooks/despatched", params=auth, data=b'{"x":"' + b"a" * 2000 + b'"}'
    )
    assert large.status == 413

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"a" * 200

    chunked = await bridge.client.post("/webhooks/despatched", params=auth, data=chunks())
    assert chunked.status == 413
    assert await probe.get_all(queue, expected=1, timeout=0.5) == []


async def test_health_readiness_and_metrics(
    exchange: str, make_bridge: BridgeFactory, probe: BrokerProbe
) -> None:
    bridge = await make_bridge()
    assert (await bridge.client.get("/healthz")).status == 200
    ready = await bridge.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["broker"] == "connected"
    await bridge.client.post("/webhooks/delivered", params={"APIKEY": API_KEY}, data=b"[]")
    scrape = await (await bridge.client.get("/metrics")).text()
    assert 'bridge_webhooks_total{code="200",event="delivered"}' in scrape
    assert "bridge_publish_seconds_bucket" in scrape
    assert API_KEY not in scrape


async def test_every_answer_is_json(
    exchange: str, make_bridge: BridgeFactory, probe: BrokerProbe
) -> None:
    bridge = await make_bridge()
    for method, path in [
        ("GET", "/"),
        ("POST", "/webhooks"),
        ("GET", "/healthz"),
        ("POST", "/healthz"),
        ("POST", "/webhooks/despatched"),
    ]:
        response = await bridge.client.request(method, path)
        assert response.content_type == "application/json", (method, path)
        orjson.loads(await response.read())
