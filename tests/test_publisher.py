"""The publisher against the real broker (each test on the fast path and on aiormq's public
path: the both_publish_paths marker): many publishes batched into few writes each get their
own confirm, a return or a closed channel fails only its publish, identical twins are
published together and a returned twin is never reported kept, and nothing is left behind in
aiormq's bookkeeping."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
import pytest

from bridge.amqp.connection import BrokerLink
from bridge.amqp.publisher import Publisher, PublishFailed
from bridge.core.contract import Envelope, webhook_envelope
from tests.conftest import AMQP_URL, BrokerProbe, fixture_body
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.both_publish_paths


def envelope(event: str, order: int) -> Envelope:
    document = orjson.loads(fixture_body("despatched"))
    document["ID"] = order
    body = orjson.dumps(document)
    return webhook_envelope(event, body, document, f"req-{order}", time.time())


@pytest.fixture
async def link() -> AsyncIterator[BrokerLink]:
    link = BrokerLink((AMQP_URL,), name="test publisher")
    assert await link.start(wait=5)
    yield link
    await link.close()


@dataclass
class Bound:
    """A publisher to the plain exchange, and the queue bound to ``order.despatched``."""

    publisher: Publisher
    probe: BrokerProbe
    queue: str


@pytest.fixture
async def bound(plain_exchange: tuple[str, BrokerProbe], link: BrokerLink) -> Bound:
    name, probe = plain_exchange
    queue = await probe.bind_queue(name, "order.despatched")
    return Bound(Publisher(link, name, timeout=5), probe, queue)


async def test_concurrent_publishes_are_each_confirmed_and_all_arrive(
    bound: Bound, link: BrokerLink
) -> None:
    publisher, probe, queue = bound.publisher, bound.probe, bound.queue
    envelopes = [envelope("despatched", i) for i in range(300)]
    await asyncio.gather(*(publisher.publish(e) for e in envelopes))
    got = await probe.get_all(queue, expected=300)
    assert sorted(m.header.properties.message_id for m in got) == sorted(
        e.message_id for e in envelopes
    )
    assert link.channel is not None
    assert link.channel.message_id_delivery_tag == {}  # type: ignore[attr-defined]


async def test_a_returned_message_fails_alone_in_its_batch(bound: Bound, link: BrokerLink) -> None:
    publisher, probe, queue = bound.publisher, bound.probe, bound.queue
    routed = [envelope("despatched", i) for i in range(20)]
    unroutable = [envelope("cancelled", 1000 + i) for i in range(5)]
    results = await asyncio.gather(
        *(publisher.publish(e) for e in routed + unroutable), return_exceptions=True
    )
    assert results[:20] == [None] * 20
    assert all(isinstance(r, PublishFailed) and r.reason == "returned" for r in results[20:])
    assert len(await probe.get_all(queue, expected=20)) == 20
    # The channel is still good for the next publish.
    await publisher.publish(envelope("despatched", 99))
    assert link.channel is not None
    assert link.channel.message_id_delivery_tag == {}  # type: ignore[attr-defined]


async def test_identical_twins_are_both_confirmed(bound: Bound) -> None:
    publisher, probe, queue = bound.publisher, bound.probe, bound.queue
    twin = envelope("despatched", 7)
    await asyncio.gather(publisher.publish(twin), publisher.publish(twin))
    assert len(await probe.get_all(queue, expected=2)) == 2


async def test_a_missing_exchange_fails_with_channel_closed(link: BrokerLink) -> None:
    publisher = Publisher(link, f"test.missing.{uuid.uuid4().hex[:8]}", timeout=5)
    with pytest.raises(PublishFailed) as failed:
        await publisher.publish(envelope("despatched", 1))
    assert failed.value.reason == "channel_closed"


async def test_no_broker_fails_fast() -> None:
    link = BrokerLink(("amqp://guest:guest@127.0.0.1:1/",), name="test nowhere")
    publisher = Publisher(link, "x", timeout=5)
    with pytest.raises(PublishFailed) as failed:
        await publisher.publish(envelope("despatched", 1))
    assert failed.value.reason == "no_broker"


async def test_no_confirm_in_time_is_a_timeout_and_the_next_publish_works(bound: Bound) -> None:
    publisher = bound.publisher
    with pytest.raises(PublishFailed) as failed:
        await publisher.publish(envelope("despatched", 1), timeout=0)
    assert failed.value.reason == "timeout"
    await publisher.publish(envelope("despatched", 2))


async def test_a_cancelled_publish_is_cancelled_not_failed(bound: Bound) -> None:
    publisher = bound.publisher
    task = asyncio.create_task(publisher.publish(envelope("despatched", 1)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await publisher.publish(envelope("despatched", 1))  # its twin slot was released


@pytest.fixture
async def held() -> AsyncIterator[tuple[TcpProxy, BrokerLink]]:
    """A link through a proxy that can hold the broker's answers (confirms, returns)."""
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    link = BrokerLink((proxy.url,), name="test publisher held")
    assert await link.start(wait=5)
    yield proxy, link
    proxy.release_replies()
    await link.close()
    await proxy.close()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_identical_twins_are_published_together_not_one_after_the_other(
    plain_exchange: tuple[str, BrokerProbe], held: tuple[TcpProxy, BrokerLink], publish_path: str
) -> None:
    """With every confirm held back, all 8 twins still reach the queue: none waits for
    another's confirm."""
    (name, probe), (proxy, link) = plain_exchange, held
    queue = await probe.bind_queue(name, "order.despatched")
    publisher = Publisher(link, name, timeout=30)
    twin = envelope("despatched", 8)
    proxy.hold_replies()
    tasks = [asyncio.create_task(publisher.publish(twin)) for _ in range(8)]

    async def all_routed() -> bool:
        return await probe.count(queue) == 8

    routed = await _until(all_routed)
    proxy.release_replies()
    assert await asyncio.gather(*tasks) == [None] * 8
    assert routed, "twins waited for each other's confirm"


async def test_a_returned_twin_fails_and_its_routed_twin_is_confirmed(
    plain_exchange: tuple[str, BrokerProbe], held: tuple[TcpProxy, BrokerLink]
) -> None:
    """Twin A is routed, the binding goes, twin B comes back: B is never reported kept."""
    (name, probe), (proxy, link) = plain_exchange, held
    queue = await probe.bind_queue(name, "order.despatched")
    publisher = Publisher(link, name, timeout=30)
    twin = envelope("despatched", 9)
    proxy.hold_replies()
    first = asyncio.create_task(publisher.publish(twin))

    async def routed() -> bool:
        return await probe.count(queue) == 1

    assert await _until(routed)
    assert probe.channel is not None
    await probe.channel.queue_unbind(queue, name, routing_key="order.despatched")
    second = asyncio.create_task(publisher.publish(twin))
    await asyncio.sleep(0.3)  # let B reach the broker (on the fast path) before releasing
    proxy.release_replies()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert results[0] is None, results
    assert isinstance(results[1], PublishFailed) and results[1].reason == "returned"
    assert await probe.count(queue) == 1


async def test_unroutable_twins_all_fail_as_returned(bound: Bound) -> None:
    publisher = bound.publisher
    twin = envelope("cancelled", 77)
    results = await asyncio.gather(
        *(publisher.publish(twin) for _ in range(6)), return_exceptions=True
    )
    assert all(isinstance(r, PublishFailed) and r.reason == "returned" for r in results), results
    await publisher.publish(envelope("despatched", 78))  # the channel is still good


async def test_published_bytes_count_every_confirmed_body_on_either_path(
    bound: Bound, link: BrokerLink, publish_path: str
) -> None:
    from bridge.amqp.publisher import FAST
    from bridge.core import metrics

    publisher = bound.publisher
    assert link.channel is not None
    if publish_path == "fast":  # the default: the fast path, where the counter had stayed at 0
        assert publisher.path() == FAST
    counted = metrics.PUBLISHED_BYTES._value.get()
    sent = [envelope("despatched", i) for i in range(3)]
    await asyncio.gather(*(publisher.publish(e) for e in sent))
    with pytest.raises(PublishFailed):  # a returned message was not published
        await publisher.publish(envelope("cancelled", 9))
    assert metrics.PUBLISHED_BYTES._value.get() - counted == sum(len(e.body) for e in sent)
