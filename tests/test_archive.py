"""The archive stream against the real broker: what serve publishes is kept intact, found by
window and order, and replayed to one subscriber only (library and command line)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
import orjson
import pytest
from aiormq.abc import DeliveredMessage

from bridge.amqp.topology import archive_name, declare, partition_queue_name, subscriber_topology
from bridge.archive.reader import ArchivedWebhook, ArchiveQuery, find
from bridge.archive.replay import replay
from bridge.cli import main
from bridge.core.contract import (
    EVENTS,
    HEADER_REPLAY_ID,
    HEADER_REPLAYED_AT,
    ORDER_EVENTS,
    routing_key,
)
from tests.conftest import AMQP_URL, API_KEY, BridgeFactory, BrokerProbe, fixture_body
from tests.worker_helpers import subscriber, track_subscriber, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _broker_and_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Secrets are settings from the environment only (never command-line flags).
    monkeypatch.setenv("BRIDGE_AMQP_URL", AMQP_URL)
    monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)


def order_body(event: str, order_id: int) -> bytes:
    """The fixture body of ``event``, made to belong to order ``order_id``."""
    document: Any = orjson.loads(fixture_body(event))
    if event == "delivered":
        for tracking in document:
            tracking["OrderShipment"]["OrderId"] = order_id
    elif event == "split":
        document[0]["OrderId"] = order_id
        document[0]["Order"]["ID"] = order_id
    else:
        document["ID"] = order_id
        document["OrderNumber"] = f"SO-{order_id}"
    return orjson.dumps(document)


async def post(bridge: Any, event: str, body: bytes) -> str:
    response = await bridge.client.post(f"/webhooks/{event}", params={"APIKEY": API_KEY}, data=body)
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["status"] == "accepted"
    return str(answer["message_id"])


async def found(exchange: str, query: ArchiveQuery) -> list[ArchivedWebhook]:
    return [webhook async for webhook in find((AMQP_URL,), exchange, query)]


def recent(**filters: Any) -> ArchiveQuery:
    now = datetime.now(UTC)
    return ArchiveQuery(
        since=now - timedelta(minutes=10), until=now + timedelta(minutes=1), **filters
    )


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def archived_bridge(make_bridge: BridgeFactory, probe: BrokerProbe, exchange: str) -> Any:
    """A receiver with the archive on (the probe deletes the stream afterwards)."""
    probe.track(queues=(archive_name(exchange),))
    return await make_bridge(archive=True)


async def test_a_posted_webhook_is_in_the_archive_with_body_properties_and_headers_intact(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    queue = await probe.bind_queue(exchange, "order.#")
    await probe.bind_queue(exchange, "asn.#", queue)
    bridge = await archived_bridge(make_bridge, probe, exchange)
    ids = {event: await post(bridge, event, fixture_body(event)) for event in EVENTS}
    delivered = {m.header.properties.message_id: m for m in await probe.get_all(queue, len(EVENTS))}

    archived = await found(exchange, recent())

    assert [w.message_id for w in archived] == [ids[e] for e in EVENTS]
    for webhook in archived:
        original = delivered[webhook.message_id]
        assert webhook.body == original.body == fixture_body(webhook.event)
        assert webhook.routing_key == routing_key(webhook.event)
        theirs = original.header.properties
        for name in ("content_type", "delivery_mode", "message_type", "app_id", "message_id"):
            assert getattr(webhook.properties, name) == getattr(theirs, name), name
        assert webhook.properties.timestamp == theirs.timestamp
        headers = dict(theirs.headers or {})
        headers.pop("x-delivery-count", None)  # the quorum queue's, not ours
        assert webhook.headers == headers
        assert webhook.properties.headers == headers
        assert webhook.source == "webhook" and webhook.size == len(webhook.body)


async def test_three_bursts_replaying_the_middle_window_delivers_exactly_that_burst_once(
    exchange: str,
    probe: BrokerProbe,
    make_bridge: BridgeFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = await probe.bind_queue(exchange, "order.#")  # another subscriber: never touched
    bridge = await archived_bridge(make_bridge, probe, exchange)
    bursts: list[list[str]] = []
    edges: list[tuple[float, float]] = []
    for burst in range(3):
        if burst:
            await asyncio.sleep(2)
        start = time.time()
        bursts.append(
            [
                await post(bridge, "despatched", order_body("despatched", burst * 100 + i))
                for i in range(5)
            ]
        )
        edges.append((start, time.time()))
    # x-received-at has milliseconds, cut (not rounded) from the receiver's clock.
    since = datetime.fromtimestamp(int(edges[1][0] * 1000) / 1000, UTC).isoformat()
    until = datetime.fromtimestamp(edges[1][1] + 0.001, UTC).isoformat()
    target = f"{exchange}.erp"
    await probe.channel.queue_declare(target, durable=True, arguments={"x-queue-type": "quorum"})  # type: ignore[union-attr]
    probe.track(queues=(target,))
    common = ["--exchange", exchange, "--since", since, "--until", until]

    assert await cli("archive", "replay", *common, "--to", target, "--dry-run") == 0
    assert "would replay 5 webhooks" in capsys.readouterr().out
    assert await probe.get_until_sentinel(target) == []

    assert await cli("archive", "replay", *common, "--to", target) == 0
    out = capsys.readouterr().out
    assert "replayed 5 of 5 webhooks" in out, out
    copies = await probe.get_until_sentinel(target)
    assert sorted(m.header.properties.message_id for m in copies) == sorted(bursts[1])
    replay_ids = {m.header.properties.headers[HEADER_REPLAY_ID] for m in copies}
    assert len(replay_ids) == 1 and str(replay_ids.pop()) in out
    assert all(HEADER_REPLAYED_AT in m.header.properties.headers for m in copies)
    # The other subscriber saw each webhook once, live; nothing of the replay.
    assert len(await probe.get_until_sentinel(other)) == 15


async def test_find_by_order_returns_its_four_events_and_none_of_another_order(
    exchange: str,
    probe: BrokerProbe,
    make_bridge: BridgeFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bridge = await archived_bridge(make_bridge, probe, exchange)
    mine = {await post(bridge, event, order_body(event, 777001)) for event in ORDER_EVENTS}
    for event in ORDER_EVENTS:
        await post(bridge, event, order_body(event, 888002))

    common = ["--exchange", exchange]
    assert await cli("archive", "find", *common, "--order", "777001", "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["message_id"] for line in lines} == mine
    assert sorted(line["event"] for line in lines) == sorted(ORDER_EVENTS)
    assert {line["order_id"] for line in lines} == {"777001"}
    assert "body" not in lines[0]

    assert await cli("archive", "find", *common, "--order", "777001", "--event", "split") == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.split("\t")[1:3] == ["split", "777001"]

    assert await cli("archive", "find", *common, "--message-id", min(mine), "--json", "--body") == 0
    [document] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert document["body"].encode() == order_body(document["event"], 777001)


async def test_a_subscriber_added_later_gets_earlier_webhooks_by_replay(
    exchange: str,
    probe: BrokerProbe,
    make_bridge: BridgeFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bridge = await archived_bridge(make_bridge, probe, exchange)
    sent = {await post(bridge, event, order_body(event, 4242)) for event in ORDER_EVENTS}
    name = f"{exchange}.new"
    topology = subscriber_topology(exchange, name, ("despatched", "cancelled"), (1000,))
    from bridge.amqp.topology import declare

    await declare(probe.channel, topology)  # type: ignore[arg-type]
    probe.track(
        queues=tuple(q.name for q in topology.queues),
        exchanges=tuple(e.name for e in topology.exchanges),
    )

    common = ["--exchange", exchange, "--since", "1h"]
    code = await cli("archive", "replay", *common, "--event", "despatched,cancelled", "--to", name)
    assert code == 0, capsys.readouterr().err
    copies = await probe.get_all(name, expected=2)
    assert len(copies) == 2
    assert {m.header.properties.message_type for m in copies} == {"despatched", "cancelled"}
    assert {m.header.properties.message_id for m in copies} <= sent
    for message in copies:
        assert message.body == order_body(message.header.properties.message_type, 4242)


async def test_with_the_archive_on_a_webhook_nobody_wants_is_kept_findable_and_replayable(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    bridge = await archived_bridge(make_bridge, probe, exchange)
    body = order_body("cancelled", 5150)
    message_id = await post(bridge, "cancelled", body)
    bad = await bridge.client.post(
        "/webhooks/cancelled", params={"APIKEY": API_KEY}, data=b"not json"
    )
    assert bad.status == 400

    [kept] = await found(exchange, recent(order_id="5150"))
    assert kept.message_id == message_id and kept.body == body
    [quarantined] = await found(exchange, recent(events=("invalid",)))
    assert quarantined.routing_key == "invalid.cancelled" and quarantined.body == b"not json"
    # The archive is a route: the alternate exchange no longer fires.
    assert await probe.count(exchange + ".unrouted") == 0

    target = f"{exchange}.late"
    await probe.channel.queue_declare(target, durable=True, arguments={"x-queue-type": "quorum"})  # type: ignore[union-attr]
    probe.track(queues=(target,))
    result = await replay((AMQP_URL,), exchange, recent(), target)
    # Without --event, quarantined bodies stay out: no subscriber gets those either.
    assert (result.matched, result.sent) == (1, 1)
    [copy] = await probe.get_all(target, expected=1)
    assert copy.body == body and copy.header.properties.message_id == message_id


async def test_window_edges_are_exact_to_the_millisecond(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    bridge = await archived_bridge(make_bridge, probe, exchange)
    for i in range(20):
        await post(bridge, "despatched", order_body("despatched", 9000 + i))
    everything = await found(exchange, recent())
    assert len(everything) == 20
    middle = everything[5:15]
    query = ArchiveQuery(since=middle[0].received_at, until=everything[15].received_at)
    # Several webhooks can share a millisecond: the expectation follows the same rule.
    expected = [w.message_id for w in everything if query.since <= w.received_at < query.until]
    assert [w.message_id for w in await found(exchange, query)] == expected
    assert len(expected) >= 10 - sum(1 for w in everything if w.received_at == query.until)


async def test_missing_archive_and_unknown_subscriber_are_one_line_with_the_fix(
    exchange: str, probe: BrokerProbe, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--exchange", exchange]
    assert await cli("archive", "find", *common) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "BRIDGE_ARCHIVE=true" in err
    assert await cli("archive", "replay", *common, "--since", "1h", "--to", "nobody-here") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nobody-here does not exist" in err
    assert await cli("archive", "replay", *common, "--since", "1h", "--to", "erp.dlq") == 2
    assert "is not a subscriber" in capsys.readouterr().err
    assert await cli("archive", "find", *common, "--since", "yesterday") == 2
    assert "use e.g. 2026-11-30T10:00:00Z, 90m, 2h or 7d" in capsys.readouterr().err
    assert await cli("archive", "status", *common, "--archive", "false") == 0
    assert "off" in capsys.readouterr().out


async def test_status_shows_size_oldest_newest_and_retention(
    exchange: str,
    probe: BrokerProbe,
    make_bridge: BridgeFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bridge = await archived_bridge(make_bridge, probe, exchange)
    for i in range(3):
        await post(bridge, "despatched", order_body("despatched", 300 + i))
    archived = await found(exchange, recent())
    # A find leaves an end marker at the log's end: status still names the last webhook.
    common = ["--exchange", exchange]
    assert await cli("archive", "status", *common) == 0
    out = capsys.readouterr().out
    stamp = archived[0].received_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert f"oldest     {stamp}" in out
    stamp = archived[-1].received_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert f"newest     {stamp}" in out
    assert "retention  30D, 50000000000 bytes" in out
    assert await cli("archive", "status", *common, "--archive-max-age", "7D") == 0
    assert "retention  differs" in capsys.readouterr().out


def test_topology_print_has_the_archive_unless_it_is_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["topology", "--print", "--exchange", "x.orders", "--archive", "true"]) == 0
    out = capsys.readouterr().out
    assert "queue    x.orders.archive (durable) x-max-age=30D" in out
    assert "binding  x.orders -> x.orders.archive [#]" in out
    assert main(["topology", "--print", "--exchange", "x.orders", "--archive", "false"]) == 0
    assert "archive" not in capsys.readouterr().out


async def test_doctor_says_where_unwanted_webhooks_go_and_catches_a_leftover_archive(
    exchange: str,
    probe: BrokerProbe,
    make_bridge: BridgeFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bridge = await archived_bridge(make_bridge, probe, exchange)
    common = ["doctor", "--exchange", exchange, "--public-url", bridge.url]
    common += ["--skip-simulate"]
    assert await cli(*common, "--archive", "true") == 0
    out = capsys.readouterr().out
    assert f"webhooks no subscriber wants are kept in {exchange}.archive" in out, out

    # The archive turned off but left bound: .unrouted would stay empty without a word.
    assert await cli(*common, "--archive", "false") == 1
    [line] = [x for x in capsys.readouterr().out.splitlines() if "exchange and queues" in x]
    assert line.startswith("FAIL") and f"rabbitmqctl delete_queue {exchange}.archive" in line


async def test_a_retention_that_differs_from_the_archive_s_is_one_line_naming_the_settings(
    exchange: str, probe: BrokerProbe, capsys: pytest.CaptureFixture[str]
) -> None:
    probe.track(queues=(archive_name(exchange),))
    common = ["topology", "--exchange", exchange, "--archive", "true"]
    assert await cli(*common) == 0
    capsys.readouterr()
    assert await cli(*common, "--archive-max-age", "7D") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "received '7D' but current is '30D'" in err
    assert "BRIDGE_ARCHIVE_MAX_AGE" in err


async def test_replay_to_an_ordered_subscriber_goes_through_its_partitions(
    exchange: str,
    probe: BrokerProbe,
    make_bridge: BridgeFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bridge = await archived_bridge(make_bridge, probe, exchange)
    sent = [
        await post(bridge, "despatched", order_body("despatched", 7000 + i % 3)) for i in range(6)
    ]
    # Declared after the posts, so only the replay can fill its partitions.
    sub = subscriber(ordered=True, partitions=2, events=("despatched",))
    track_subscriber(probe, exchange, sub)
    assert probe.channel is not None
    await declare(probe.channel, sub.topology(exchange))

    common = ["--exchange", exchange, "--since", "1h", "--to", sub.name]
    assert await cli("archive", "replay", *common) == 0, capsys.readouterr().err
    # Single-active-consumer quorum queues refuse basic.get: consume them.
    partitions: list[list[DeliveredMessage]] = [[], []]
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for index, kept in enumerate(partitions):

            async def take(message: DeliveredMessage, kept: list[DeliveredMessage] = kept) -> None:
                kept.append(message)

            queue = partition_queue_name(sub.name, index)
            await channel.basic_consume(queue, take, no_ack=True)
        await wait_until(lambda: sum(map(len, partitions)) == len(sent), timeout=10)
    finally:
        await connection.close()
    copies = [m for messages in partitions for m in messages]
    assert sorted(m.header.properties.message_id for m in copies) == sorted(sent)
    assert all(HEADER_REPLAY_ID in (m.header.properties.headers or {}) for m in copies)
    # Each order's copies in one partition, in the order they were received.
    for messages in partitions:
        ids = [m.header.properties.message_id for m in messages]
        assert ids == [i for i in sent if i in ids]
    orders = [{orjson.loads(m.body)["ID"] for m in messages} for messages in partitions]
    assert not orders[0] & orders[1]
