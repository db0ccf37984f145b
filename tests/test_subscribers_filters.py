"""Subscribers filtered by client and warehouse: only the wanted webhooks ever reach the
queue (a headers exchange in front of it), and the receiver's publish of an unwanted one
still succeeds."""

from __future__ import annotations

import orjson

from bridge.amqp.topology import declare, filtered_sink_name, receiver_topology, unrouted_name
from bridge.worker.message import Message
from tests.conftest import BrokerProbe
from tests.worker_helpers import (
    publish,
    running_worker,
    subscriber,
    track_subscriber,
    wait_until,
)


def _body(order: int, client: int | None, warehouse: int | None = 1) -> bytes:
    document: dict[str, object] = {"ID": order, "OrderNumber": f"SO-{order}"}
    if client is not None:
        document["ClientId"] = client
    if warehouse is not None:
        document["WarehouseId"] = warehouse
    return orjson.dumps(document)


async def test_a_subscriber_filtered_to_one_client_gets_exactly_its_webhooks(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(clients=("7",))
    track_subscriber(probe, exchange, sub)
    assert probe.channel is not None
    await declare(probe.channel, receiver_topology(exchange) + sub.topology(exchange))

    wanted: set[str] = set()
    for n in range(30):
        client = (7, 12, 99)[n % 3]
        event = ("despatched", "cancelled")[n % 2]
        # publish() is mandatory and confirmed: it raises if the broker returned the message.
        message_id = await publish(probe, exchange, event, _body(1000 + n, client))
        if client == 7:
            wanted.add(message_id)
    await publish(probe, exchange, "despatched", _body(2000, None))  # no ClientId: not ours

    # Every publish was confirmed, so routing is done: the queue never held the others.
    assert await probe.count(sub.name) == len(wanted) == 10
    # Filtered out is not "unrouted": those webhooks were taken by the filter, on purpose.
    assert await probe.count(unrouted_name(exchange)) == 0
    assert await probe.count(filtered_sink_name(exchange)) == 0

    handled: list[Message] = []

    async def handler(message: Message) -> None:
        handled.append(message)

    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        await wait_until(lambda: len(handled) >= len(wanted))
    assert {m.message_id for m in handled} == wanted
    assert {m.headers["x-client-id"] for m in handled} == {"7"}


async def test_clients_and_warehouses_together_both_have_to_match(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(clients=("7", "12"), warehouses=("1",))
    track_subscriber(probe, exchange, sub)
    assert probe.channel is not None
    await declare(probe.channel, receiver_topology(exchange) + sub.topology(exchange))

    cases = [(7, 1, True), (12, 1, True), (7, 2, False), (99, 1, False), (7, None, False)]
    wanted = set()
    for n, (client, warehouse, match) in enumerate(cases):
        message_id = await publish(probe, exchange, "despatched", _body(n, client, warehouse))
        if match:
            wanted.add(message_id)
    messages = await probe.get_all(sub.name, expected=len(wanted))
    assert {m.header.properties.message_id for m in messages} == wanted
    assert await probe.count(sub.name) == 0


async def test_an_unfiltered_subscriber_still_gets_everything(
    probe: BrokerProbe, exchange: str
) -> None:
    filtered = subscriber(warehouses=("3",))
    everything = subscriber()
    for sub in (filtered, everything):
        track_subscriber(probe, exchange, sub)
    assert probe.channel is not None
    topology = receiver_topology(exchange) + filtered.topology(exchange)
    await declare(probe.channel, topology + everything.topology(exchange))

    for n in range(6):
        await publish(probe, exchange, "cancelled", _body(n, 5, warehouse=3 if n < 2 else 4))
    assert await probe.count(everything.name) == 6
    assert await probe.count(filtered.name) == 2
