"""The ``serve`` process: broker link, publisher, delivery and the HTTP server, started and
stopped in the right order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from bridge.amqp.connection import BrokerLink
from bridge.amqp.publisher import Publisher
from bridge.amqp.topology import declare, settings_topology
from bridge.core import metrics
from bridge.core.logs import AccessLogger
from bridge.core.settings import Settings
from bridge.receiving.auth import Authenticator
from bridge.receiving.delivery import Delivery
from bridge.receiving.receiver import BODY_READ_TIMEOUT, create_app, server_options
from bridge.receiving.spool import Spool

log = logging.getLogger("bridge.receiving.serve")

SHUTDOWN_GRACE = 10.0


def build_delivery(settings: Settings) -> Delivery:
    """The broker link, publisher and delivery of a receiver (not yet started)."""
    topology = settings_topology(settings)
    metrics.ARCHIVE_MAX_BYTES.set(settings.archive_max_bytes if settings.archive else 0)

    async def on_channel(channel: object) -> None:
        await declare(channel, topology)  # type: ignore[arg-type]

    link = BrokerLink(settings.amqp_urls, on_channel, name="mintsoft-bridge serve")
    link.on_state_change(lambda up: metrics.BROKER_CONNECTED.set(1 if up else 0))
    publisher = Publisher(link, settings.exchange, settings.publish_timeout)
    if not settings.spool_path:
        return Delivery(publisher)

    async def repair() -> None:
        # After a basic.return: put back what someone deleted (the alternate exchange).
        channel = link.channel
        if channel is not None:
            await declare(channel, topology)

    spool = Spool(settings.spool_path, settings.spool_max_bytes)
    return Delivery(publisher, spool, repair)


def build_app(
    settings: Settings, delivery: Delivery, body_timeout: float = BODY_READ_TIMEOUT
) -> web.Application:
    auth = Authenticator(settings.api_keys, settings.auth_headers, settings.allow_unauthenticated)
    return create_app(auth, delivery, settings.max_body_bytes, body_timeout)


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run the receiver until SIGTERM or SIGINT, then drain in-flight requests and close."""
    delivery = build_delivery(settings)
    await delivery.open()
    link = delivery.publisher.link
    if not await link.start(wait=min(settings.publish_timeout, 5.0)):
        log.warning("broker not reachable yet; serving anyway and retrying in the background")
    app = build_app(settings, delivery)
    runner = web.AppRunner(
        app,
        access_log_class=AccessLogger,
        shutdown_timeout=SHUTDOWN_GRACE,
        handle_signals=False,
        **server_options(),
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    log.info("listening on http://%s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("stopping: finishing in-flight requests")
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await runner.cleanup()
        await delivery.close()
        await link.close()
