"""The ``serve`` process: broker link, publisher, delivery and the HTTP server, started and
stopped in the right order.

On SIGTERM (or SIGINT) it stops listening, lets in-flight requests finish (``SHUTDOWN_GRACE``),
and then, when the spool holds webhooks and the broker is connected, keeps draining the spool
for up to ``SHUTDOWN_DRAIN`` seconds before it exits, so a scaled-down receiver does not
leave webhooks on a volume nobody mounts. What it could not publish stays in the spool (and
is logged with the ``spool drain --path`` command that publishes it). A second signal during
that drain ends the process at once; the spool is durable either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from bridge.amqp.connection import BrokerLink
from bridge.amqp.publisher import Publisher
from bridge.amqp.topology import declare, settings_topology
from bridge.core import heap, metrics
from bridge.core.access_log import AccessLogger
from bridge.core.listeners import (
    check_listen,
    hide_versions,
    listen_error,
    start_metrics_listener,
)
from bridge.core.settings import Settings, SettingsError
from bridge.core.tasks import stop_on_signals
from bridge.receiving.auth import Authenticator
from bridge.receiving.delivery import Delivery
from bridge.receiving.receiver import BODY_READ_TIMEOUT, create_app, server_options
from bridge.receiving.spool import Spool, SpoolInUse, SpoolLock

log = logging.getLogger("bridge.receiving.serve")

SHUTDOWN_GRACE = 10.0

SHUTDOWN_DRAIN = 60.0
"""Seconds a stopping receiver spends publishing what its spool holds, broker permitting.
The Kubernetes StatefulSet's terminationGracePeriodSeconds (100) covers SHUTDOWN_GRACE, this,
LAST_SCRAPE_WAIT and the closing of the link."""

LAST_SCRAPE_WAIT = 20.0
"""After a shutdown drain, seconds the separate metrics listener waits for one more scrape, so
Prometheus records the spool's final depth (MintsoftBridgeSpoolStranded reads the last one)."""


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
    # With BRIDGE_METRICS_PORT set, /metrics is on that listener only, not the public port.
    metrics_route = settings.metrics_port is None
    app = create_app(auth, delivery, settings.max_body_bytes, body_timeout, metrics_route)
    hide_versions(app)
    return app


async def serve(
    settings: Settings, ready: asyncio.Event | None = None, reuse_port: bool = False
) -> None:
    """Run the receiver until SIGTERM or SIGINT, then finish in-flight requests, drain the
    spool (bounded) and close. ``reuse_port``: share the port with the other workers of
    ``serve --workers N`` (:mod:`.workers`, whose parent checked the address)."""
    if not reuse_port:
        check_listen(settings.host, settings.port, "BRIDGE_HOST", "BRIDGE_PORT")
    scraped = asyncio.Event()
    metrics_runner = None
    if settings.metrics_port is not None:
        if settings.metrics_port == settings.port:
            raise SettingsError(
                f"BRIDGE_METRICS_PORT={settings.metrics_port} is also BRIDGE_PORT: give "
                "metrics a port of their own (or unset it to serve /metrics on BRIDGE_PORT)"
            )
        # First: a port that cannot be bound is a bad setting, before anything is opened.
        host = settings.metrics_host
        metrics_runner = await start_metrics_listener(
            host, settings.metrics_port, scraped.set, process="serve"
        )
        log.info("metrics on http://%s:%d/metrics", host, settings.metrics_port)
    delivery = build_delivery(settings)
    await delivery.open()
    lock = SpoolLock(settings.spool_path) if settings.spool_path else None
    if lock is not None:
        # After open() (which creates the spool's folder) and before the link starts, so
        # nothing was published: one process per spool, or its messages go out twice.
        try:
            lock.acquire()
        except (SpoolInUse, OSError) as exc:
            await delivery.close()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            reason = "another mintsoft-bridge serve or spool drain uses it"
            if not isinstance(exc, SpoolInUse):
                reason = f"its lock file cannot be created: {exc.strerror}"
            raise SettingsError(
                f"BRIDGE_SPOOL_PATH={settings.spool_path!r} cannot be used ({reason}): "
                "give each receiver its own spool"
            ) from None
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
    site = web.TCPSite(
        runner, settings.host, settings.port, reuse_address=True, reuse_port=reuse_port or None
    )
    try:
        await site.start()
    except OSError as exc:  # a bad BRIDGE_HOST, or BRIDGE_PORT taken: a setting to fix
        await runner.cleanup()
        await delivery.close()
        await link.close()
        raise listen_error(
            exc, settings.host, settings.port, "BRIDGE_HOST", "BRIDGE_PORT"
        ) from None
    log.info("listening on http://%s:%d", settings.host, settings.port)
    heap.settle()  # start-up is done: full collections skip what it built (see heap)
    try:
        with stop_on_signals() as stop:
            if ready is not None:
                ready.set()
            await stop.wait()
    finally:
        log.info("stopping: finishing in-flight requests")
        await runner.cleanup()
        if await drain_before_exit(delivery) and metrics_runner is not None:
            scraped.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LAST_SCRAPE_WAIT):
                    await scraped.wait()
        await delivery.close()
        await link.close()
        if lock is not None:
            lock.release()
        if metrics_runner is not None:
            await metrics_runner.cleanup()


async def drain_before_exit(delivery: Delivery, bound: float = SHUTDOWN_DRAIN) -> bool:
    """Publish what the spool holds, for ``bound`` seconds at most, if the broker is connected;
    log what is left. Returns whether the spool held anything."""
    spool, drainer = delivery.spool, delivery.drainer
    if spool is None or drainer is None or spool.depth == 0:
        return False
    held = spool.depth
    recover = (
        "they are published when this receiver starts again with the same spool, "
        f"or by `mintsoft-bridge spool drain --path {spool.path}`"
    )
    if not delivery.publisher.connected:
        log.warning(
            "stopping with %d webhooks in the spool %s (the broker is unreachable): %s",
            held,
            spool.path,
            recover,
        )
        return True
    log.info("stopping: publishing the %d webhooks in the spool first (%g s at most)", held, bound)
    deadline = asyncio.get_running_loop().time() + bound
    left = await drainer.until_empty(deadline=deadline)
    if left:
        log.warning(
            "stopping with %d of %d webhooks still in the spool %s: %s",
            left,
            held,
            spool.path,
            recover,
        )
    else:
        log.info("the spool is empty: its %d webhooks are published", held)
    return True
