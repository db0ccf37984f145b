"""A console search only reads the archive (issue 22, point 10): each ``GET /orders`` used
to append an end marker to the stream (20 searches grew it from 158 to 238 messages); so
did the overview's archive summary."""

from __future__ import annotations

import asyncio
import re
import uuid

from aiohttp.test_utils import TestClient, TestServer
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from bridge.console.app import build_app
from bridge.core.contract import HEADER_ARCHIVE_SENTINEL
from tests.conftest import BridgeFactory, BrokerProbe
from tests.console_helpers import archive_despatched, console_state, sign_in


async def _stream_contents(probe: BrokerProbe, stream: str) -> list[DeliveredMessage]:
    """Every message of ``stream``: the test appends a marker of its own (the test may
    write) and reads from the first offset up to it."""
    channel = await probe._chan()
    marker = uuid.uuid4().hex
    confirm_channel = await probe.connection.channel(publisher_confirms=True)  # type: ignore[union-attr]
    await confirm_channel.basic_publish(
        b"", routing_key=stream, properties=Basic.Properties(message_id=marker, delivery_mode=2)
    )
    await confirm_channel.close()
    got: list[DeliveredMessage] = []
    done = asyncio.Event()

    async def take(message: DeliveredMessage) -> None:
        if message.header.properties.message_id == marker:
            done.set()
        elif not done.is_set():
            got.append(message)
        await channel.basic_ack(message.delivery_tag or 0)

    await channel.basic_qos(prefetch_count=100)
    ok = await channel.basic_consume(stream, take, arguments={"x-stream-offset": "first"})
    await asyncio.wait_for(done.wait(), 30)
    await channel.basic_cancel(ok.consumer_tag or "")
    return got


async def test_searches_find_the_webhooks_and_write_nothing_into_the_archive(
    probe: BrokerProbe, exchange: str, make_bridge: BridgeFactory
) -> None:
    bridge = await make_bridge(archive=True)
    stream = exchange + ".archive"
    probe.track(queues=(stream,))
    await archive_despatched(bridge, 3)
    before = await _stream_contents(probe, stream)
    async with TestClient(TestServer(build_app(console_state(exchange, [])))) as client:
        await sign_in(client)
        for since in ["1h"] * 9 + ["36500d"]:  # 100 years: read from the stream's start
            found = await client.get(f"/orders?q=SO-20285&since={since}")
            page = await found.text()
            assert found.status == 200, page[:500]
            links = re.findall(r'href="(/orders/webhooks/[^"]+)"', page)
            assert len(links) == 3, page
        opened = await client.get(links[0].replace("&amp;", "&"))
        assert opened.status == 200 and "SO-20285" in await opened.text()
        overview = await client.get("/")  # its archive summary reads the stream too
        assert overview.status == 200
    after = await _stream_contents(probe, stream)
    # Only the test's own marker was added: no search wrote an end marker.
    assert len(after) == len(before) + 1
    assert not [m for m in after if HEADER_ARCHIVE_SENTINEL in (m.header.properties.headers or {})]
