"""The headline of ``make bench`` compares like with like: every server's exchange routes a
webhook to the same subscriber's quorum queue (the bridge as shipped to the archive stream
as well), never to the alternate exchange's ``.unrouted`` queue; and the non-ASCII cost is
a ratio of the paired bursts' totals."""

from __future__ import annotations

from bench import shipped
from bench.run import HEADLINE, SERVER_NAMES, server_topology
from bridge.amqp.topology import QUORUM, Topology, archive_name, unrouted_name
from bridge.core.contract import ORDER_EVENTS, routing_key

EXCHANGE = "bench.test"
HEADLINE_SERVERS = [name for name in HEADLINE if name in SERVER_NAMES]


def _matches(pattern: str, key: str) -> bool:
    """AMQP topic matching (``*`` one word, ``#`` zero or more)."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def destinations(topology: Topology, exchange: str, key: str) -> set[str]:
    """The queues a message published to ``exchange`` with ``key`` lands in (through
    exchange-to-exchange bindings too), with the queue names relative to ``exchange``."""
    queues: set[str] = set()
    for binding in topology.bindings:
        if binding.exchange != exchange or not _matches(binding.routing_key, key):
            continue
        if binding.destination_type == "exchange":
            queues |= destinations(topology, binding.queue, key)
        else:
            queues.add(binding.queue)
    return queues


def test_the_headline_has_its_three_servers() -> None:
    assert HEADLINE_SERVERS == ["naive", "bridge", "bridge-archive-off"]


def test_every_headline_server_routes_orders_to_the_same_subscriber_queue() -> None:
    routed: dict[str, dict[str, set[str]]] = {}
    queues: dict[str, dict[str, dict[str, object]]] = {}
    for name in HEADLINE_SERVERS:
        exchange = f"{EXCHANGE}.{name}"
        topology = server_topology(name, exchange)
        declared = {q.name: q.arguments for q in topology.queues}
        routed[name] = {}
        for event in ORDER_EVENTS:
            landed = destinations(topology, exchange, routing_key(event))
            assert landed, f"{name}: order.{event} is routed nowhere (the alternate exchange)"
            assert unrouted_name(exchange) not in landed
            routed[name][event] = {q.removeprefix(exchange) for q in landed}
            for queue in landed:
                assert queue in declared, f"{name}: {queue} is bound but not declared"
        queues[name] = {
            q.removeprefix(exchange): {
                k: v.removeprefix(exchange) if isinstance(v, str) else v for k, v in args.items()
            }
            for q, args in declared.items()
        }
        if name == "bridge":
            assert queues[name][".archive"]["x-queue-type"] == "stream"
            assert archive_name(exchange) in routed[name]["despatched"] | {
                exchange + q for q in routed[name]["despatched"]
            }
    for name in HEADLINE_SERVERS:
        subscriber = routed[name]["despatched"] - {".archive"}
        assert len(subscriber) == 1, f"{name}: {subscriber}"
        (queue,) = subscriber
        assert queues[name][queue]["x-queue-type"] == QUORUM["x-queue-type"]
    subscribers = {
        name: {event: landed - {".archive"} for event, landed in by_event.items()}
        for name, by_event in routed.items()
    }
    assert subscribers["bridge"] == subscribers["naive"] == subscribers["bridge-archive-off"]
    # The same queue, declared with the same arguments, on every server.
    (queue,) = subscribers["naive"]["despatched"]
    assert queues["bridge"][queue] == queues["naive"][queue] == queues["bridge-archive-off"][queue]
    # As shipped, the archive stream as well; with the archive off or naive, only that queue.
    assert routed["bridge"]["despatched"] == {queue, ".archive"}
    assert routed["naive"]["despatched"] == routed["bridge-archive-off"]["despatched"] == {queue}


def test_the_non_ascii_ratio_is_one_of_the_paired_totals() -> None:
    rounds: list[dict[str, object]] = [
        {
            "rps": 100.0,
            "cpu_us_per_request": 200.0,
            "non_ascii": {"rps": 90.0, "cpu_us_per_request": 210.0},
        }
    ]
    ratios = shipped.ratios({}, rounds)
    assert ratios["non_ascii"]["cpu"]["median"] == 210.0 / 200.0
    assert ratios["non_ascii"]["rps"]["median"] == 90.0 / 100.0
