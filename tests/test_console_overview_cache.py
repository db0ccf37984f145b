"""The overview's archive figures are cached per console process: refreshes inside the
window do not each read the archive (a read writes end markers into the stream), and the
first refresh after it reads once, however many tabs ask at the same moment. Every refresh
reads the broker over the console's one connection."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

import bridge.archive.status as status_module
from bridge.amqp.topology import ArchiveRetention, archive_name
from bridge.console.app import build_app
from bridge.console.broker import ConsoleBroker
from bridge.console.sources import ARCHIVE_CACHE_SECONDS, ArchiveSummaryCache
from tests.conftest import AMQP_URL, API_KEY, BridgeFactory, BrokerProbe, fixture_body
from tests.console_helpers import console_state, sign_in
from tests.support.tcp_proxy import TcpProxy
from tests.worker_helpers import subscriber

AMQP_PORT = urlsplit(AMQP_URL).port or 5672

pytestmark = pytest.mark.timeout(120)


async def test_refreshes_within_the_window_read_the_archive_once(
    exchange: str,
    probe: BrokerProbe,
    make_bridge: BridgeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe.track(queues=(archive_name(exchange),))
    bridge = await make_bridge(archive=True)
    answer = await bridge.client.post(
        "/webhooks/despatched", params={"APIKEY": API_KEY}, data=fixture_body("despatched")
    )
    assert answer.status == 200, await answer.text()

    reads: list[str] = []
    real = status_module.status_on

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[1])
        return await real(*args, **kwargs)  # the real read, on the real broker

    monkeypatch.setattr(status_module, "status_on", counted)
    now = [1000.0]
    console = console_state(exchange, [])
    console.archive_cache = ArchiveSummaryCache(clock=lambda: now[0])
    async with TestClient(TestServer(build_app(console))) as client:
        await sign_in(client)
        for _ in range(12):  # a minute of one tab's 5 s refreshes, and the page itself
            live = await client.get("/overview/live", headers={"HX-Request": "true"})
            assert live.status == 200
        assert (await client.get("/")).status == 200
        assert reads == [exchange]

        # Past the window: the next refreshes (three tabs at once) read it once more.
        now[0] += ARCHIVE_CACHE_SECONDS + 1
        answers = await asyncio.gather(
            *(client.get("/overview/live", headers={"HX-Request": "true"}) for _ in range(3))
        )
        assert [a.status for a in answers] == [200, 200, 200]
        assert reads == [exchange, exchange]


async def test_the_cache_rereads_for_another_exchange_and_keeps_no_failed_read(
    exchange: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    fail = [True]

    async def flaky(connection: Any, name: str, retention: Any = None) -> Any:
        reads.append(name)
        if fail[0]:
            raise OSError("connection refused")
        return status_module.ArchiveStatus(False, 0, None, None, None, None)

    class Broker:  # the console's link, as far as the cache uses it
        async def connection(self) -> None:
            return None

    broker: Any = Broker()
    monkeypatch.setattr(status_module, "status_on", flaky)
    cache = ArchiveSummaryCache(clock=lambda: 0.0)
    with pytest.raises(OSError):
        await cache.get(broker, exchange, ArchiveRetention())
    fail[0] = False
    first = await cache.get(broker, exchange, ArchiveRetention())
    assert await cache.get(broker, exchange, ArchiveRetention()) is first
    await cache.get(broker, exchange + ".other", ArchiveRetention())
    assert reads == [exchange, exchange, exchange + ".other"]


async def test_every_page_and_refresh_shares_one_broker_connection(
    exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    """The console opens its link once; overview refreshes (several tabs), the archive
    summary past its cache window and the other pages add no connection of their own."""
    probe.track(queues=(archive_name(exchange),))
    await make_bridge(archive=True)  # declares the archive stream
    proxy = TcpProxy("127.0.0.1", AMQP_PORT)
    await proxy.start()
    now = [1000.0]
    console = console_state(exchange, [subscriber(name=f"{exchange}.erp")])
    console.amqp_urls = (proxy.url,)
    console.broker = ConsoleBroker(console.amqp_urls)
    console.archive_cache = ArchiveSummaryCache(clock=lambda: now[0])
    try:
        async with TestClient(TestServer(build_app(console))) as client:
            await sign_in(client)
            for _ in range(3):
                answers = await asyncio.gather(
                    *(
                        client.get("/overview/live", headers={"HX-Request": "true"})
                        for _ in range(4)
                    )
                )
                assert [a.status for a in answers] == [200] * 4
                assert "no connection" not in await answers[0].text()
                now[0] += ARCHIVE_CACHE_SECONDS + 1  # the archive is read again each round
            assert (await client.get("/")).status == 200
            assert proxy.accepted == 1
    finally:
        await proxy.close()
