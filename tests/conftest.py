"""Fixtures: the real broker, unique exchange names per test, a bridge served in-process,
and a private RabbitMQ node for tests that stop or kill the broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiormq
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiormq.abc import AbstractChannel, DeliveredMessage

from bridge.amqp.topology import declare, receiver_topology
from bridge.core.settings import Settings
from bridge.mintsoft.simulate import fixture_name
from bridge.receiving.delivery import Delivery
from bridge.receiving.receiver import BODY_READ_TIMEOUT, HEADER_TIMEOUT, server_options
from bridge.receiving.serve import build_app, build_delivery
from tests.support import leftovers
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.rabbit_node import RabbitNode, installed

if TYPE_CHECKING:
    from tests.support.ledger_streams import Streams

AMQP_URL = os.environ.get("BRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "mintsoft"
PACKAGED_FIXTURES = Path(__file__).resolve().parent.parent / "bridge" / "fixtures"
API_KEY = "test-key-3f6c0b1e"
AUTH_HEADER = "Basic dXNlcm5hbWU6cGFzc3dvcmQ="


def fixture_body(event: str) -> bytes:
    """The example body of an event, from ../shared/fixtures when present (else the copy
    shipped in the package)."""
    name = fixture_name(event)
    path = FIXTURES / name if (FIXTURES / name).exists() else PACKAGED_FIXTURES / name
    return path.read_bytes()


class BrokerProbe:
    """The test's own view of a broker: declares queues to observe, reads them, and deletes
    everything it and the bridge declared when the test ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: aiormq.abc.AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()

    async def open(self) -> None:
        self.connection = await aiormq.connect(self.url)
        self.channel = await self.connection.channel()

    async def _chan(self) -> AbstractChannel:
        if self.channel is None or self.channel.is_closed:
            if self.connection is None or self.connection.is_closed:
                self.connection = await aiormq.connect(self.url)
            self.channel = await self.connection.channel()
        return self.channel

    async def bind_queue(self, exchange: str, routing_key: str, name: str | None = None) -> str:
        channel = await self._chan()
        name = name or f"probe-{uuid.uuid4().hex[:10]}"
        await channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.queue_bind(name, exchange, routing_key=routing_key)
        self.queues.add(name)
        return name

    async def count(self, queue: str) -> int:
        channel = await self._chan()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)

    async def get_all(
        self, queue: str, expected: int | None = None, timeout: float = 5.0
    ) -> list[DeliveredMessage]:
        """Every message in ``queue`` (acked), waiting up to ``timeout`` for ``expected``."""
        channel = await self._chan()
        messages: list[DeliveredMessage] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if (
                message.delivery_tag is not None
                and message.body is not None
                and not _is_empty(message)
            ):
                messages.append(message)
                continue
            if (
                expected is None
                or len(messages) >= expected
                or asyncio.get_running_loop().time() > deadline
            ):
                return messages
            await asyncio.sleep(0.05)

    async def get_until_sentinel(self, queue: str, timeout: float = 10.0) -> list[DeliveredMessage]:
        """Every message in ``queue`` (acked) ahead of a sentinel this sends after them, the
        sentinel left out: proof that nothing else is on its way, without a fixed wait."""
        channel = await self._chan()
        marker = f"sentinel-{uuid.uuid4().hex}"
        properties = aiormq.spec.Basic.Properties(message_id=marker)
        await channel.basic_publish(b"sentinel", routing_key=queue, properties=properties)
        messages: list[DeliveredMessage] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if message.delivery_tag is not None and not _is_empty(message):
                if message.header.properties.message_id == marker:
                    return messages
                messages.append(message)
                continue
            assert asyncio.get_running_loop().time() < deadline, f"no sentinel back from {queue}"
            await asyncio.sleep(0.02)

    def track(self, *, queues: tuple[str, ...] = (), exchanges: tuple[str, ...] = ()) -> None:
        self.queues.update(queues)
        self.exchanges.update(exchanges)

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            channel = await self._chan()
            for queue in self.queues:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
                    channel = await self._chan()
            for exchange in self.exchanges:
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(exchange)
                    channel = await self._chan()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()


def delete_declared(url: str, queues: tuple[str, ...], exchanges: tuple[str, ...]) -> None:
    """Delete queues and exchanges from synchronous code (subprocess tests)."""

    async def run() -> None:
        probe = BrokerProbe(url)
        probe.track(queues=queues, exchanges=exchanges)
        await probe.cleanup()

    asyncio.run(run())


def _is_empty(message: DeliveredMessage) -> bool:
    from pamqp.commands import Basic

    return isinstance(message.delivery, Basic.GetEmpty)


def receiver_names(exchange: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The queues and exchanges a receiver declares for ``exchange`` (the archive stream
    included, when a process declared it with the archive on, and the delivery records'
    stream)."""
    queues = (
        exchange + ".unrouted",
        exchange + ".invalid",
        exchange + ".archive",
        exchange + ".deliveries",
    )
    return queues, (exchange, exchange + ".unrouted")


@pytest.fixture
def exchange() -> str:
    """A fresh exchange name, so tests never see each other's messages."""
    return leftovers.made(f"test.{uuid.uuid4().hex[:12]}")


leftovers.note_declarations()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_on_the_broker() -> Iterator[None]:
    """At the session's end, every queue and exchange its tests declared is gone from the
    shared broker (tests/support/leftovers.py); else a warning names each with its test, or
    a failure with BRIDGE_TEST_LEAKS=fail."""
    yield
    left = leftovers.leftovers(AMQP_URL)
    if not left:
        return
    message = f"{len(left)} left on the broker by this session's tests: " + "; ".join(left)
    if os.environ.get("BRIDGE_TEST_LEAKS") == "fail":
        pytest.fail(message, pytrace=False)
    warnings.warn(message, pytest.PytestWarning, stacklevel=1)


@pytest.fixture
async def probe(exchange: str) -> AsyncIterator[BrokerProbe]:
    probe = BrokerProbe(AMQP_URL)
    await probe.open()
    assert probe.channel is not None
    await declare(probe.channel, receiver_topology(exchange))
    queues, exchanges = receiver_names(exchange)
    probe.track(queues=queues, exchanges=exchanges)
    yield probe
    await probe.cleanup()


def bridge_settings(exchange: str, **overrides: Any) -> Settings:
    base = Settings(
        amqp_urls=(AMQP_URL,),
        api_keys=(API_KEY,),
        auth_headers=(AUTH_HEADER,),
        exchange=exchange,
        publish_timeout=2.0,
        spool_path="",
        # Off unless a test turns it on (archive=True): the tests that predate the archive
        # check the alternate exchange's queue, which a bound archive silences.
        archive=False,
    )
    return replace(base, **overrides)


@dataclass
class RunningBridge:
    client: TestClient[Any, Any]
    delivery: Delivery
    settings: Settings

    @property
    def url(self) -> str:
        return str(self.client.make_url(""))


BridgeFactory = Callable[..., Awaitable[RunningBridge]]


@pytest.fixture
async def make_bridge(exchange: str) -> AsyncIterator[BridgeFactory]:
    """Start a receiver in-process against a real broker; closed when the test ends."""
    running: list[RunningBridge] = []

    async def start(
        wait_connected: bool = True,
        body_timeout: float = BODY_READ_TIMEOUT,
        header_timeout: float = HEADER_TIMEOUT,
        start_delivery: bool = True,
        **overrides: Any,
    ) -> RunningBridge:
        """``spool_path=str(tmp_path / "spool.sqlite3")`` enables the spool;
        ``start_delivery=False`` leaves the spool and its drain for the test to open."""
        settings = bridge_settings(exchange, **overrides)
        delivery = build_delivery(settings)
        if start_delivery:
            await delivery.open()
        await delivery.publisher.link.start(wait=10.0 if wait_connected else 0.0)
        server = TestServer(build_app(settings, delivery, body_timeout))
        # TestServer takes server options in start_server, not in its constructor.
        await server.start_server(**server_options(header_timeout))
        client: TestClient[Any, Any] = TestClient(server)
        await client.start_server()
        bridge = RunningBridge(client, delivery, settings)
        running.append(bridge)
        return bridge

    yield start
    for bridge in running:
        await bridge.client.close()
        await bridge.delivery.close()
        await bridge.delivery.publisher.link.close()
    # What the receivers declared goes with them (a test may use no probe of its own).
    for url, name in {(b.settings.amqp_urls[0], b.settings.exchange) for b in running}:
        cleanup = BrokerProbe(url)
        cleanup.track(queues=receiver_names(name)[0], exchanges=receiver_names(name)[1])
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):  # a private node a test stopped: never hang
                await cleanup.cleanup()


PRIVATE_NODE_FIXTURES = frozenset(
    {"rabbit_node", "healthy_node", "rabbit_cluster", "healthy_cluster"}
)
"""Tests that use one of these share one private node (or cluster) per pytest process, and
may stop or kill it: under xdist (``--dist loadgroup``) they all run in one worker, one at a
time, so one node is started and no test finds it stopped by another."""


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PRIVATE_NODE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("private-rabbitmq-node"))


def pytest_collection_finish(session: pytest.Session) -> None:
    # xdist groups by a suffix on the node id, which some pytest releases drop silently (then
    # every worker starts its own node and tests stop each other's): fail loudly instead.
    if getattr(session.config.option, "loadgroup", False):  # set in xdist workers only
        lost = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group")]
        lost = [nodeid for nodeid in lost if "@" not in nodeid]
        if lost:
            raise pytest.UsageError(
                f"xdist_group not applied to {lost[0]}: see pyproject's pytest pin"
            )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A module marked both_publish_paths runs each test on both paths (what a second run
    # with BRIDGE_PUBLISH_PATH=public did): ids [fast] and [public].
    if metafunc.definition.get_closest_marker("both_publish_paths"):
        metafunc.parametrize("publish_path", ["fast", "public"], indirect=True)


@pytest.fixture(autouse=True)
def publish_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``fast`` or ``public``: the publish path the bridge takes in this test (and in the
    processes it starts, which inherit the environment). ``public`` sets
    BRIDGE_PUBLISH_PATH=public, the switch of bridge/amqp/aiormq_internals.py."""
    path: str = getattr(request, "param", "fast")
    if path == "public":
        monkeypatch.setenv("BRIDGE_PUBLISH_PATH", "public")
    return path


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[RabbitNode]:
    """A private broker node that fault tests may stop, block or kill."""
    if not installed():
        pytest.skip("rabbitmq-server is not installed: fault tests need a private node")
    node = RabbitNode()
    node.start()
    yield node
    node.destroy()


@pytest.fixture
def healthy_node(rabbit_node: RabbitNode) -> Iterator[RabbitNode]:
    """The private node, made running again after the test whatever the test did to it."""
    yield rabbit_node
    if rabbit_node.listening():
        # Up and serving: only undo a memory alarm a test raised (each rabbitmqctl call
        # costs seconds, and most tests leave the node as they found it).
        if rabbit_node.watermark_changed:
            rabbit_node.ctl("set_vm_memory_high_watermark", "0.4", check=False)
            rabbit_node.watermark_changed = False
        return
    try:
        rabbit_node.ctl("status", timeout=20)
    except Exception:
        rabbit_node.start()
        return
    rabbit_node.ctl("start_app", check=False)
    rabbit_node.ctl("set_vm_memory_high_watermark", "0.4", check=False)
    rabbit_node.watermark_changed = False


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """A private three-node RabbitMQ cluster (``-m cluster`` tests); removed afterwards."""
    if not installed():
        pytest.skip("rabbitmq-server is not installed: cluster tests need private nodes")
    cluster = RabbitCluster(size=3)
    try:
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    yield cluster
    cluster.destroy()


@pytest.fixture
def healthy_cluster(rabbit_cluster: RabbitCluster) -> Iterator[RabbitCluster]:
    """The private cluster, with every node running again after the test."""
    yield rabbit_cluster
    for node in rabbit_cluster.nodes:
        if not node.listening():
            node.start()
    rabbit_cluster.wait_running(len(rabbit_cluster.nodes))


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh ledger database URL, once on SQLite and once on PostgreSQL."""
    from tests.support.ledger_db import ledger_database

    with ledger_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def streams(exchange: str, probe: BrokerProbe) -> AsyncIterator[Streams]:
    """The ledger's two streams of ``exchange``, declared and open for feeding; deleted
    after the test."""
    from tests.support.ledger_streams import Streams, stream_names

    queues, exchanges = stream_names(exchange)
    probe.track(queues=queues, exchanges=exchanges)
    opened = await Streams(AMQP_URL, exchange).open()
    yield opened
    await opened.close()


@pytest.fixture
async def channel() -> AsyncIterator[AbstractChannel]:
    """A channel of its own on the broker (publisher confirms on), closed after the test."""
    connection = await aiormq.connect(AMQP_URL)
    opened = await connection.channel(publisher_confirms=True)
    yield opened
    await connection.close()


async def consuming(
    channel: AbstractChannel, bodies: Iterable[bytes], prefetch: int = 10
) -> tuple[str, asyncio.Queue[DeliveredMessage]]:
    """A fresh auto-delete queue holding ``bodies`` (in order), consumed on ``channel``
    without auto-ack: its name, and where its deliveries arrive."""
    queue = f"test.{uuid.uuid4().hex[:10]}"
    await channel.queue_declare(queue, auto_delete=True)
    for body in bodies:
        await channel.basic_publish(body, routing_key=queue)
    got: asyncio.Queue[DeliveredMessage] = asyncio.Queue()

    async def on_message(message: DeliveredMessage) -> None:
        await got.put(message)

    await channel.basic_qos(prefetch_count=prefetch)
    await channel.basic_consume(queue, on_message)
    return queue, got


async def only_a_sentinel_follows(
    channel: AbstractChannel, queue: str, got: asyncio.Queue[DeliveredMessage]
) -> int:
    """Prove nothing else comes back from ``queue`` (see :func:`consuming`): a sentinel
    published now is the next delivery, and the last. Its delivery tag, to settle."""
    await channel.basic_publish(b"sentinel", routing_key=queue)
    last = await asyncio.wait_for(got.get(), 10)
    assert last.body == b"sentinel" and got.empty()
    assert last.delivery_tag is not None
    return last.delivery_tag


@pytest.fixture
async def plain_exchange() -> AsyncIterator[tuple[str, BrokerProbe]]:
    """A topic exchange without an alternate exchange (so unroutable messages come back),
    and a probe on it; both deleted after the test."""
    name = f"test.{uuid.uuid4().hex[:12]}"
    probe = BrokerProbe(AMQP_URL)
    await probe.open()
    assert probe.channel is not None
    await probe.channel.exchange_declare(name, exchange_type="topic", durable=False)
    probe.track(exchanges=(name,))
    yield name, probe
    await probe.cleanup()
