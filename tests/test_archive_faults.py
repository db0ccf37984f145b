"""The archive under faults: it survives a broker killed hard and restarted (on a private
node, never the shared broker), and a replay killed mid-way loses nothing it had confirmed
and can be run again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import aiormq
import pytest

from bridge.amqp.topology import ArchiveRetention, archive_name, declare, receiver_topology
from bridge.archive.reader import ArchivedWebhook, ArchiveQuery, find
from bridge.core.contract import HEADER_REPLAY_ID, webhook_envelope
from bridge.errors import CommandError
from tests.conftest import AMQP_URL, API_KEY, BridgeFactory, BrokerProbe, receiver_names
from tests.support.rabbit_node import RabbitNode
from tests.worker_helpers import wait_until

pytestmark = pytest.mark.timeout(240)


def _query() -> ArchiveQuery:
    now = datetime.now(UTC)
    return ArchiveQuery(since=now - timedelta(minutes=10), until=now + timedelta(minutes=1))


@pytest.mark.slow
async def test_the_archive_survives_the_broker_killed_and_restarted(
    healthy_node: RabbitNode, exchange: str, make_bridge: BridgeFactory
) -> None:
    node = healthy_node
    probe = BrokerProbe(node.url)
    queues, exchanges = receiver_names(exchange)
    probe.track(queues=queues, exchanges=exchanges)
    try:
        bridge = await make_bridge(amqp_urls=(node.url,), archive=True)
        link = bridge.delivery.publisher.link
        bodies = {}

        async def archive(first: int) -> None:
            for i in range(first, first + 3):
                body = b'{"ID": %d, "OrderNumber": "SO-%d"}' % (i, i)
                response = await bridge.client.post(
                    "/webhooks/despatched", params={"APIKEY": API_KEY}, data=body
                )
                assert response.status == 200
                bodies[(await response.json())["message_id"]] = body

        await archive(0)
        # RabbitMQ 3.10 loses a stream killed within a second of its first declaration (its
        # metadata is not on disk yet: the stream stays "down" after the restart). An
        # archive lives for weeks, which is the case that matters: a clean restart puts it
        # in that state, without waiting. Then more webhooks, confirmed just before the kill.
        await asyncio.to_thread(node.stop_app)
        await asyncio.to_thread(node.start_app)
        await wait_until(lambda: link.reconnects >= 1 and link.channel is not None, 60)
        await archive(3)
        before = [w async for w in find((node.url,), exchange, _query())]
        assert len(before) == 6
        await asyncio.to_thread(node.kill)
        await asyncio.to_thread(node.start)

        after = await _found_once_recovered(node, exchange)
        assert {w.message_id: w.body for w in after} == bodies
        assert [(w.offset, w.headers, w.properties.timestamp) for w in after] == [
            (w.offset, w.headers, w.properties.timestamp) for w in before
        ]
    finally:
        await probe.cleanup()


async def _found_once_recovered(node: RabbitNode, exchange: str) -> list[ArchivedWebhook]:
    # Right after a restart the stream's members are still recovering ("not available
    # yet"): the archive is back within seconds, with everything it held.
    deadline = time.monotonic() + 60
    while True:
        try:
            return [w async for w in find((node.url,), exchange, _query())]
        except CommandError as exc:
            assert "not available yet" in str(exc), exc
            assert time.monotonic() < deadline, exc
            await asyncio.sleep(0.5)


async def _fill_archive(exchange: str, count: int) -> set[str]:
    """``count`` distinct webhooks straight into the exchange, confirmed (faster than HTTP)."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await declare(channel, receiver_topology(exchange, ArchiveRetention()))
        ids: set[str] = set()
        now = time.time()
        for start in range(0, count, 500):
            pending = []
            for n in range(start, min(start + 500, count)):
                body = b'{"ID": %d, "OrderNumber": "SO-%d"}' % (n, n)
                document = {"ID": n, "OrderNumber": f"SO-{n}"}
                envelope = webhook_envelope("despatched", body, document, f"r{n}", now)
                ids.add(envelope.message_id)
                pending.append(
                    channel.basic_publish(
                        body,
                        exchange=exchange,
                        routing_key=envelope.routing_key,
                        properties=envelope.properties(),
                    )
                )
            await asyncio.gather(*pending)
        return ids
    finally:
        await connection.close()


async def _depth(probe: BrokerProbe, queue: str) -> int:
    return await probe.count(queue)  # a quorum queue's count is current, not sampled


@pytest.mark.slow
async def test_a_replay_killed_mid_way_loses_nothing_confirmed_and_can_run_again(
    exchange: str, probe: BrokerProbe
) -> None:
    probe.track(queues=(archive_name(exchange),))
    sent = await _fill_archive(exchange, 6000)
    target = f"{exchange}.erp"
    assert probe.channel is not None
    await probe.channel.queue_declare(target, durable=True, arguments={"x-queue-type": "quorum"})
    probe.track(queues=(target,))
    argv = [sys.executable, "-m", "bridge", "archive", "replay", "--since", "10m", "--to", target]
    env = {**os.environ, "BRIDGE_AMQP_URL": AMQP_URL, "BRIDGE_EXCHANGE": exchange}

    first = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while await _depth(probe, target) < 300:
            assert first.returncode is None, "the replay ended before it was killed"
            assert time.monotonic() < deadline, "the replay copied nothing"
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
    finally:
        if first.returncode is None:
            first.kill()
        await first.communicate()
    await asyncio.sleep(0.5)  # publishes the broker had read before the kill have landed
    killed_at = await _depth(probe, target)
    assert 300 <= killed_at < len(sent), "killed before or after the replay, not mid-way"

    second = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert f"replayed {len(sent)} of {len(sent)}" in second.stdout

    copies = await probe.get_all(target, expected=killed_at + len(sent), timeout=30)
    ids = Counter(m.header.properties.message_id for m in copies)
    # Nothing lost: every archived webhook is there; the first run's copies are whole
    # webhooks of the archive, at most once more each, under the first run's replay id.
    assert set(ids) == sent
    assert max(ids.values()) <= 2
    runs = Counter(str(m.header.properties.headers[HEADER_REPLAY_ID]) for m in copies)
    assert len(runs) == 2 and len(sent) in runs.values()
    assert sum(runs.values()) == len(copies) == killed_at + len(sent)
