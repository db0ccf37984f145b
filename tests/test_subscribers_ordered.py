"""ordered = true: two worker processes share the partitions of an ordered subscriber, and
for every order the handled sequence never goes backwards, even when the handler fails at
random and one worker is SIGKILLed mid-run; nothing goes missing."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from bridge.amqp.topology import declare, dlq_name, receiver_topology, roster_name
from bridge.worker.dlq import list_dead_letters, replay_dead_letters
from bridge.worker.forwarder import Forwarder
from bridge.worker.message import Message, plain_headers
from bridge.worker.subscribers import load_subscribers
from tests.conftest import AMQP_URL, BrokerProbe
from tests.support.rabbit_node import free_port
from tests.worker_helpers import (
    publish,
    running_worker,
    start_worker_process,
    stop_worker_processes,
    subscriber,
    track_subscriber,
    unique_name,
    wait_until,
)

ORDERS = 50
EVENTS_PER_ORDER = 40  # 2,000 webhooks


def _handled(log: Path) -> list[tuple[int, int, int]]:
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        order, seq, pid = line.split()
        rows.append((int(order), int(seq), int(pid)))
    return rows


def _backwards(rows: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """(order, previous seq, seq) wherever an order's sequence went down."""
    last: dict[int, int] = {}
    wrong = []
    for order, seq, _pid in rows:
        if seq < last.get(order, 0):
            wrong.append((order, last[order], seq))
        last[order] = max(seq, last.get(order, 0))
    return wrong


@pytest.mark.slow
async def test_two_workers_keep_each_orders_sequence_through_failures_and_a_sigkill(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    name = unique_name("ordered")
    config = tmp_path / "subs.toml"
    config.write_text(
        f'[[subscriber]]\nname = "{name}"\nevents = ["*"]\n'
        'handler = "tests.worker_helpers:sequenced"\n'
        'ordered = true\npartitions = 4\nretry_delays = ["100ms", "200ms"]\n'
        'in_process_tries = 3\ntimeout = "5s"\n'
    )
    [sub] = load_subscribers(str(config))
    track_subscriber(probe, exchange, sub)
    log = tmp_path / "handled.log"
    outs = [(tmp_path / f"worker{i}.out").open("wb") for i in range(2)]
    workers = [start_worker_process(config, exchange, log, out) for out in outs]
    try:

        async def both_consuming() -> bool:
            for worker in workers:
                assert worker.poll() is None, (tmp_path / "worker0.out").read_text()
            try:
                # A passive declare of a queue not there yet closes the channel: a new one.
                channel = await probe._chan()
                ok = await channel.queue_declare(roster_name(name), passive=True)
            except Exception:
                return False
            return ok.consumer_count == 2

        await wait_until(both_consuming, timeout=30, interval=0.1)

        # Each order's events in sequence, the orders interleaved differently every round.
        bodies = []
        for seq in range(1, EVENTS_PER_ORDER + 1):
            orders = list(range(1, ORDERS + 1))
            random.shuffle(orders)
            bodies += [orjson.dumps({"ID": o, "Seq": seq, "ClientId": 1}) for o in orders]
        for start in range(0, len(bodies), 100):
            # Confirmed in batches; within a batch the channel keeps publish order.
            await asyncio.gather(
                *(publish(probe, exchange, "despatched", b) for b in bodies[start : start + 100])
            )

        await wait_until(lambda: len(_handled(log)) >= 800, timeout=40, interval=0.05)
        before_kill = _handled(log)
        per_worker = Counter(pid for _o, _s, pid in before_kill)
        victim = max(workers, key=lambda w: per_worker[w.pid])
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        survivor = next(w for w in workers if w is not victim)

        def all_handled() -> bool:
            assert survivor.poll() is None
            return len({(o, s) for o, s, _p in _handled(log)}) >= len(bodies)

        await wait_until(all_handled, timeout=45, interval=0.1)
        # Nothing more arrives: one last event per order, which its partition hands over
        # only after any late duplicate of that order.
        last = EVENTS_PER_ORDER + 1
        await asyncio.gather(
            *(
                publish(probe, exchange, "despatched", orjson.dumps({"ID": o, "Seq": last}))
                for o in range(1, ORDERS + 1)
            )
        )
        await wait_until(
            lambda: len({o for o, s, _p in _handled(log) if s == last}) == ORDERS, timeout=30
        )
        rows = [row for row in _handled(log) if row[1] != last]
    finally:
        stop_worker_processes(workers)
        for out in outs:
            out.close()

    # Both workers had work before the kill: the partitions are shared, not hot standbys.
    assert len(per_worker) == 2, per_worker
    assert _backwards(rows) == []
    sequences: dict[int, set[int]] = defaultdict(set)
    for order, seq, _pid in rows:
        sequences[order].add(seq)
    assert all(sequences[o] == set(range(1, EVENTS_PER_ORDER + 1)) for o in range(1, ORDERS + 1))
    duplicates = len(rows) - len(bodies)
    # At most the message in flight in each partition the killed worker held.
    assert 0 <= duplicates <= sub.partitions, duplicates
    print(f"handled {len(rows)} for {len(bodies)} webhooks: {duplicates} duplicates")
    assert await probe.count(dlq_name(name)) == 0


async def test_a_failing_event_is_retried_in_place_then_dead_lettered_and_the_order_moves_on(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(delays=(100, 100), tries=2, ordered=True, partitions=2)
    calls: list[tuple[int, int, int]] = []
    broken = {1}

    async def handler(message: Message) -> None:
        document = message.json
        calls.append((document["ID"], document["Seq"], message.attempt))
        if document["Seq"] in broken:
            raise RuntimeError("ERP rejects it")

    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        for seq in (1, 2, 3):
            await publish(probe, exchange, "despatched", orjson.dumps({"ID": 5, "Seq": seq}))
        await wait_until(lambda: (5, 3, 1) in calls, timeout=15)
        # Seq 1 was tried 2 x 3 times in place (2 tries, then after each of the 2 waits)
        # before seq 2 was even looked at; then it went to the DLQ and the order moved on.
        assert [c for c in calls if c[1] == 1] == [(5, 1, n) for n in range(1, 7)]
        assert [seq for _o, seq, _a in calls] == [1, 1, 1, 1, 1, 1, 2, 3]
        await wait_until(lambda: probe.count(dlq_name(sub.name)), timeout=5)
        listed = await list_dead_letters((AMQP_URL,), sub.name, None)
        [dead] = listed.messages
        headers = plain_headers(dead.header.properties.headers)
        assert headers["x-attempt"] == 3 and "ERP rejects it" in headers["x-error"]
        # Replayed, it joins its order's partition again: after seq 3 now.
        broken.clear()

        async def listed_one_is_back() -> bool:  # `dlq list` returns it as it disconnects
            return await probe.count(dlq_name(sub.name)) == 1

        await wait_until(listed_one_is_back, timeout=5)
        moved, _queue = await replay_dead_letters((AMQP_URL,), sub.name, None)
        assert moved == 1
        await wait_until(lambda: calls[-1][:2] == (5, 1), timeout=10)


async def test_a_worker_started_on_full_partitions_handles_them_all_in_order(
    probe: BrokerProbe, exchange: str
) -> None:
    # The first delivery of a partition can arrive before its consume-ok: it must be taken.
    sub = subscriber(ordered=True, partitions=4)
    track_subscriber(probe, exchange, sub)
    assert probe.channel is not None
    await declare(probe.channel, receiver_topology(exchange) + sub.topology(exchange))
    for seq in range(1, 11):
        await asyncio.gather(
            *(
                publish(probe, exchange, "despatched", orjson.dumps({"ID": o, "Seq": seq}))
                for o in range(20)
            )
        )
    seen: list[tuple[int, int]] = []

    async def handler(message: Message) -> None:
        seen.append((message.json["ID"], message.json["Seq"]))

    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        await wait_until(lambda: len(seen) >= 200, timeout=15)
    assert _backwards([(o, s, 0) for o, s in seen]) == []
    assert sorted(seen) == [(o, s) for o in range(20) for s in range(1, 11)]


async def test_while_the_target_is_down_an_ordered_subscriber_holds_its_place(
    probe: BrokerProbe, exchange: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/erp"
    received: list[int] = []

    async def post(request: web.Request) -> web.Response:
        received.append(orjson.loads(await request.read())["Seq"])
        return web.json_response({})

    sub = subscriber(delays=(200, 200), tries=3, ordered=True, partitions=2)
    forwarder = Forwarder(sub.name, url, timeout=2)
    runner: web.AppRunner | None = None
    try:
        async with running_worker(probe, exchange, [sub], {sub.name: forwarder}):
            for seq in (1, 2, 3):
                await publish(probe, exchange, "despatched", orjson.dumps({"ID": 9, "Seq": seq}))
            # Refused five times in a row: the breaker opens, and the message is held.
            await wait_until(lambda: forwarder.breaker.is_open, timeout=10)
            await asyncio.sleep(1.0)
            app = web.Application()
            app.router.add_post("/erp", post)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await wait_until(lambda: len(received) >= 3, timeout=20)
            assert await probe.count(dlq_name(sub.name)) == 0
    finally:
        await forwarder.close()
        if runner is not None:
            await runner.cleanup()
    # The outage spent none of the message's tries: it was not dead-lettered, and the
    # order's later events waited behind it.
    assert received == [1, 2, 3]
