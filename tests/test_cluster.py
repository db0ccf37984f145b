"""Scale out: receivers and a subscriber on a private three-node RabbitMQ cluster.

Queues the bridge declares are quorum queues with a member on every node; a node killed
hard (SIGKILL of its VM) under load costs at most some 503s, never an acknowledged webhook:
every 200 reaches the subscriber, and both receivers keep answering through the other nodes.
The archive stream has a replica on every node too: every 200 is in the archive as well,
when the node leading the stream is the one killed.
Run alone with ``make test-cluster`` (``pytest -m cluster``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.amqp.connection import BrokerLink
from bridge.amqp.publisher import Publisher, PublishFailed
from bridge.amqp.topology import declare, receiver_topology, subscriber_topology
from bridge.archive.reader import ArchiveQuery, find
from bridge.core.contract import webhook_envelope
from bridge.errors import CommandError
from tests.conftest import API_KEY, BrokerProbe
from tests.support.ledger import Ledger, compare, ledger_body, send_load
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.serve_process import receivers

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

KEY = {"APIKEY": API_KEY}


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


def _assert_replicated_everywhere(cluster: RabbitCluster, names: list[str]) -> None:
    queues = cluster.queues()
    for name in names:
        assert queues[name]["type"] == "quorum", name
        assert set(queues[name]["members"]) == cluster.names, name


async def test_declared_queues_are_quorum_queues_on_every_node(
    rabbit_cluster: RabbitCluster,
) -> None:
    exchange = f"test.{uuid.uuid4().hex[:12]}"
    topology = receiver_topology(exchange) + subscriber_topology(
        exchange, f"{exchange}.erp", ("*",), (1000, 60_000)
    )
    probe = BrokerProbe(rabbit_cluster.urls[1])
    await probe.open()
    probe.track(
        queues=tuple(q.name for q in topology.queues),
        exchanges=tuple(e.name for e in topology.exchanges),
    )
    try:
        assert probe.channel is not None
        await declare(probe.channel, topology)
        # A subscriber's <name>.control queue is classic by design (it holds one pause
        # state message; a worker that cannot read it keeps consuming): not replicated.
        names = [q.name for q in topology.queues if not q.name.endswith(".control")]
        await asyncio.to_thread(_assert_replicated_everywhere, rabbit_cluster, names)
        status = await asyncio.to_thread(rabbit_cluster.quorum_status, f"{exchange}.erp")
        assert {row["Node Name"] for row in status} == rabbit_cluster.names
        assert sorted(row["Raft State"] for row in status) == ["follower", "follower", "leader"]
    finally:
        await probe.cleanup()


async def test_publishes_in_flight_on_a_killed_node_fail_and_the_link_fails_over(
    healthy_cluster: RabbitCluster,
) -> None:
    """Every publish in flight when its node dies ends within the timeout: confirmed (and
    then really in the queue) or PublishFailed; never a hang. The link moves on to the next
    node and publishing works again without a restart."""
    cluster = healthy_cluster
    exchange = f"test.{uuid.uuid4().hex[:12]}"
    victim, *others = cluster.nodes
    queue_topology = receiver_topology(exchange)
    probe = BrokerProbe(others[0].url)
    await probe.open()
    probe.track(
        queues=tuple(q.name for q in queue_topology.queues),
        exchanges=tuple(e.name for e in queue_topology.exchanges),
    )

    async def on_channel(channel: object) -> None:
        await declare(channel, queue_topology)  # type: ignore[arg-type]

    link = BrokerLink((victim.url, *(n.url for n in others)), on_channel, name="test link")
    publisher = Publisher(link, exchange, timeout=5.0)
    try:
        assert await link.start(wait=10)
        assert link.connected_url == victim.url
        envelopes = [
            webhook_envelope("despatched", ledger_body("in-flight", n), {}, "r", time.time())
            for n in range(3000)
        ]
        outcomes: dict[str, str] = {}

        async def publish(index: int) -> None:
            envelope = envelopes[index]
            try:
                await publisher.publish(envelope)
                outcomes[envelope.message_id] = "confirmed"
            except PublishFailed as exc:
                outcomes[envelope.message_id] = exc.reason

        tasks = [asyncio.create_task(publish(i)) for i in range(len(envelopes))]
        await _until(lambda: len(outcomes) >= 200, 30, "the first confirms")
        killed = time.monotonic()
        await asyncio.to_thread(victim.kill)
        _, pending = await asyncio.wait(tasks, timeout=publisher.timeout + 2)
        assert not pending, f"{len(pending)} publishes hung after the node died"
        failed = [k for k, v in outcomes.items() if v != "confirmed"]
        assert failed, "the kill came too late to catch any publish in flight"
        assert set(outcomes.values()) <= {"confirmed", "channel_closed", "no_broker", "nacked"}

        await _until(lambda: link.channel is not None, 30, "the link to fail over")
        assert link.connected_url in {n.url for n in others}
        failover_seconds = time.monotonic() - killed
        # Queues led by the dead node nack until they have elected a new leader.
        late = webhook_envelope("despatched", ledger_body("late", 0), {}, "r", time.time())
        nacked_after_failover = 0
        while True:
            try:
                await publisher.publish(late)
                break
            except PublishFailed as exc:
                assert exc.reason in {"nacked", "no_broker"}, exc
                assert time.monotonic() - killed < 60, "still refused 60s after the kill"
                nacked_after_failover += 1
                await asyncio.sleep(0.1)
        outcomes[late.message_id] = "confirmed"

        confirmed = {k for k, v in outcomes.items() if v == "confirmed"}
        kept = await probe.get_all(exchange + ".unrouted", expected=len(confirmed), timeout=20)
        kept_ids = {str(m.header.properties.message_id) for m in kept}
        assert confirmed <= kept_ids, f"{len(confirmed - kept_ids)} confirmed publishes lost"
        print(
            f"failover after kill: {failover_seconds:.2f}s; "
            f"outcomes {dict(Counter(outcomes.values()))}; "
            f"{nacked_after_failover} refusals before the late publish was confirmed"
        )
    finally:
        await link.close()
        await probe.cleanup()


@contextlib.contextmanager
def _worker(
    urls: tuple[str, ...], exchange: str, subscriber: str, handled: Path, output: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``mintsoft-bridge worker`` with one subscriber whose handler notes each message id
    in ``handled``."""
    config = output.with_suffix(".toml")
    config.write_text(
        f'[[subscriber]]\nname = "{subscriber}"\nevents = ["*"]\n'
        'handler = "tests.worker_helpers:record"\nprefetch = 64\n'
    )
    env = {
        **os.environ,
        "BRIDGE_AMQP_URL": ",".join(urls),
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_TEST_LOG": str(handled),
    }
    with output.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker", "--config", str(config)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _handled(path: Path) -> set[str]:
    return set(path.read_text().split()) if path.exists() else set()


async def _archived_ids(url: str, exchange: str, since: datetime) -> Counter[str]:
    """Message ids in the archive from ``since`` on, read through ``url``; the stream may
    still be electing its leader after a restart ("not available yet")."""
    query = ArchiveQuery(since=since, until=datetime.now(UTC) + timedelta(minutes=1))
    deadline = time.monotonic() + 60
    while True:
        try:
            return Counter([w.message_id async for w in find((url,), exchange, query)])
        except CommandError as exc:
            if "not available yet" not in str(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def test_two_receivers_lose_no_acknowledged_webhook_when_a_node_is_killed(
    healthy_cluster: RabbitCluster, tmp_path: Path
) -> None:
    """Receiver A (with a spool) and B (without) each list the three nodes in another order;
    a worker consumes. The node leading the archive stream (and the subscriber queue, both
    declared first by the worker), serving A and the worker, is killed under load and
    later restarted."""
    cluster = healthy_cluster
    started = datetime.now(UTC) - timedelta(seconds=5)
    exchange = f"test.{uuid.uuid4().hex[:12]}"
    subscriber = f"{exchange}.erp"
    archive = f"{exchange}.archive"
    n0, n1, n2 = cluster.nodes
    handled = tmp_path / "handled.txt"
    worker = _worker((n0.url, n2.url, n1.url), exchange, subscriber, handled, tmp_path / "w.log")
    with worker as process:
        await _until(
            lambda: {subscriber, archive} <= set(cluster.queues()) or process.poll() is not None,
            30,
            "the worker to declare its queue",
        )
        assert process.poll() is None, (tmp_path / "w.log").read_text()
        # The queue's leader is the node it was declared on: kill that one, so the kill costs
        # a leader election and a failover of receiver A and of the worker. The worker
        # declared the archive too: the stream's writer is on that node.
        queues = await asyncio.to_thread(cluster.queues)
        leader = queues[archive]["leader"]
        assert set(queues[archive]["members"]) == cluster.names, queues[archive]
        victim = next(node for node in cluster.nodes if node.name == leader)
        rest = [node for node in cluster.nodes if node is not victim]
        a_urls = (victim.url, rest[0].url, rest[1].url)
        b_urls = (rest[1].url, victim.url, rest[0].url)
        with receivers((a_urls, b_urls), exchange, API_KEY, tmp_path, spooled=(True, False)) as (
            receiver_a,
            receiver_b,
        ):
            await asyncio.to_thread(
                _assert_replicated_everywhere,
                cluster,
                [subscriber, exchange + ".unrouted", exchange + ".invalid"],
            )
            ledger_a, ledger_b = Ledger(), Ledger()
            stop = asyncio.Event()

            def answered() -> int:
                return len(ledger_a.answers) + len(ledger_b.answers)

            loads = asyncio.gather(
                *(
                    send_load(url, count=10_000, concurrency=8, params=KEY, ledger=book, stop=stop)
                    for url, book in ((receiver_a, ledger_a), (receiver_b, ledger_b))
                )
            )
            await _until(lambda: answered() >= 1000, 60, "load before the kill")
            await asyncio.to_thread(victim.kill)
            await asyncio.sleep(0.5)  # confirms already on their way have been read
            accepted_by_a = ledger_a.count("accepted")

            # Receiver A was on the killed node: the broker confirms webhooks it takes again
            # (through another node) before the killed one comes back.
            def a_failed_over() -> bool:
                return ledger_a.count("accepted") > accepted_by_a

            with contextlib.suppress(AssertionError):  # asserted below, with the outcomes
                await _until(a_failed_over, 30, "receiver A failing over")
            failed_over_before_restart = a_failed_over()
            await asyncio.to_thread(victim.start)
            at_restart = answered()
            await _until(lambda: answered() >= at_restart + 1000, 60, "load after the restart")
            stop.set()
            await loads
            await asyncio.to_thread(cluster.wait_running, 3)

            ledger = Ledger("both", {**ledger_a.answers, **ledger_b.answers})
            await _until(
                lambda: ledger.acknowledged <= _handled(handled),
                60,
                "the worker to handle every acknowledged webhook",
            )
        report = compare(ledger, Counter(handled.read_text().split()))
        print(f"{report}; A {_outcomes(ledger_a)}; B {_outcomes(ledger_b)}")
        assert not report.missing, report
        assert not report.unexpected, report
        # The archive's ledger: acknowledged but not in the archive must be 0.
        archived = compare(ledger, await _archived_ids(rest[0].url, exchange, started))
        print(f"archive: {archived}")
        assert not archived.missing, archived
        assert not archived.unexpected, archived
        assert set(ledger.statuses()) <= {200, 503}, ledger.statuses()
        assert ledger_b.count("spooled") == 0
        assert failed_over_before_restart, _outcomes(ledger_a)
        b_last = list(ledger_b.answers.values())[-100:]
        assert all(a.status == 200 for a in b_last), _outcomes(ledger_b)
        await asyncio.to_thread(
            _assert_replicated_everywhere,
            cluster,
            [subscriber, exchange + ".unrouted", exchange + ".invalid"],
        )
    probe = BrokerProbe(cluster.urls[1])
    probe.track(
        queues=(subscriber, *(f"{subscriber}.retry.{i}" for i in range(4)), subscriber + ".dlq"),
        exchanges=(exchange, exchange + ".unrouted"),
    )
    probe.track(queues=(exchange + ".unrouted", exchange + ".invalid", archive))
    await probe.cleanup()


def _outcomes(ledger: Ledger) -> dict[str, int]:
    return dict(Counter(a.outcome for a in ledger.answers.values()))
