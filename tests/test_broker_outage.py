"""A stopped broker gives 503 within the publish timeout (never a hang, never a 200), and
the same bridge answers 200 again once the broker is back, without a restart."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import API_KEY, BridgeFactory, BrokerProbe, fixture_body
from tests.support.rabbit_node import RabbitNode


async def _post(bridge, body: bytes):  # type: ignore[no-untyped-def]
    return await bridge.client.post("/webhooks/despatched", params={"APIKEY": API_KEY}, data=body)


async def test_stopped_broker_gives_503_then_200_after_start_app(
    healthy_node: RabbitNode, exchange: str, make_bridge: BridgeFactory
) -> None:
    node = healthy_node
    probe = BrokerProbe(node.url)
    await probe.open()
    probe.track(
        queues=(exchange + ".unrouted", exchange + ".invalid"),
        exchanges=(exchange, exchange + ".unrouted"),
    )
    try:
        bridge = await make_bridge(amqp_urls=(node.url,), publish_timeout=2.0)
        body = fixture_body("despatched")
        assert (await _post(bridge, body)).status == 200

        await asyncio.to_thread(node.stop_app)
        started = time.monotonic()
        response = await _post(bridge, body)
        elapsed = time.monotonic() - started
        assert response.status == 503
        assert response.headers["Retry-After"].isdigit()
        assert (await response.json())["error"] == "unavailable"
        assert elapsed <= bridge.settings.publish_timeout + 1
        ready = await bridge.client.get("/readyz")
        assert ready.status == 503

        await asyncio.to_thread(node.start_app)
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline:
            status = (await _post(bridge, body)).status
            if status == 200:
                break
            await asyncio.sleep(0.5)
        assert status == 200
        kept = await probe.get_all(exchange + ".unrouted", expected=2)
        assert len(kept) == 2
    finally:
        await probe.cleanup()
