"""The overview's archive figures are cached per console process: refreshes inside the
window do not each read the archive (a read writes end markers into the stream), and the
first refresh after it reads once, however many tabs ask at the same moment."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import bridge.archive.status as status_module
from bridge.amqp.topology import ArchiveRetention, archive_name
from bridge.console.app import build_app
from bridge.console.sources import ARCHIVE_CACHE_SECONDS, ArchiveSummaryCache
from tests.conftest import API_KEY, BridgeFactory, BrokerProbe, fixture_body
from tests.console_helpers import console_state, sign_in

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
    real = status_module.archive_status

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[1])
        return await real(*args, **kwargs)  # the real read, on the real broker

    monkeypatch.setattr(status_module, "archive_status", counted)
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

    async def flaky(urls: Any, name: str, retention: Any = None) -> Any:
        reads.append(name)
        if fail[0]:
            raise OSError("connection refused")
        return status_module.ArchiveStatus(False, 0, None, None, None, None)

    monkeypatch.setattr(status_module, "archive_status", flaky)
    cache = ArchiveSummaryCache(clock=lambda: 0.0)
    with pytest.raises(OSError):
        await cache.get(("amqp://127.0.0.1:1/",), exchange, ArchiveRetention())
    fail[0] = False
    first = await cache.get(("amqp://127.0.0.1:1/",), exchange, ArchiveRetention())
    assert await cache.get(("amqp://127.0.0.1:1/",), exchange, ArchiveRetention()) is first
    await cache.get(("amqp://127.0.0.1:1/",), exchange + ".other", ArchiveRetention())
    assert reads == [exchange, exchange, exchange + ".other"]
