"""Running a worker process: every subscriber of a subscribers file, a metrics listener,
and a clean stop on SIGTERM (in-flight handlers get ``SHUTDOWN_GRACE`` seconds; whatever is
still unacked then goes back to its queue).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.core import metrics
from bridge.core.listeners import serving_metrics
from bridge.core.settings import Settings
from bridge.core.tasks import stop_on_signals
from bridge.worker.forwarder import Forwarder, shown_url
from bridge.worker.handlers import resolve_handler
from bridge.worker.ordered import OrderedSubscription
from bridge.worker.signing import load_signer
from bridge.worker.subscribers import Handler, Subscriber, load_subscribers
from bridge.worker.subscription import SHUTDOWN_GRACE, Subscription

log = logging.getLogger("bridge.worker.runner")


RECORDS_ENV = "BRIDGE_RECORDS"
"""``off`` stops the delivery records (contract section 10). Internal: for the bench's side
by side of the worker with and without them, never for production (the ledger then misses
every attempt)."""


class Worker:
    """Every subscriber of a subscribers file, in one process. ``handlers`` (by subscriber
    name) override the file's, for tests and embedding; build it inside the event loop."""

    def __init__(
        self,
        settings: Settings,
        subscribers: Sequence[Subscriber],
        handlers: Mapping[str, Handler] | None = None,
        *,
        records: bool = True,
    ) -> None:
        self.subscriptions: list[Subscription | OrderedSubscription] = []
        self._forwarders: list[Forwarder] = []
        for sub in subscribers:
            handler = (handlers or {}).get(sub.name)
            if handler is None and sub.forward_url is not None:
                forwarder = Forwarder(
                    sub.name,
                    sub.forward_url,
                    timeout=sub.timeout,
                    headers=dict(sub.forward_headers),
                    connections=sub.partitions if sub.ordered else sub.prefetch,
                    signer=(
                        load_signer(sub.signing_secrets_env, sub.name)
                        if sub.signing_secrets_env
                        else None
                    ),
                )
                self._forwarders.append(forwarder)
                handler = forwarder
            elif handler is None:
                handler = resolve_handler(sub)
            kind = OrderedSubscription if sub.ordered else Subscription
            self.subscriptions.append(kind(settings, sub, handler, records=records))
        self._watch_links()

    def _watch_links(self) -> None:
        """``bridge_broker_connected`` is 1 while every subscriber's link is up: the same
        gauge and alert as ``serve`` (a worker without a broker consumes nothing)."""
        links = [subscription.link for subscription in self.subscriptions]

        def update(_up: bool) -> None:
            up = bool(links) and all(link.state == "connected" for link in links)
            metrics.BROKER_CONNECTED.set(1 if up else 0)

        for link in links:
            link.on_state_change(update)

    async def _all_ready(self) -> None:
        for subscription in self.subscriptions:
            await subscription.ready.wait()

    async def run(
        self,
        stop: asyncio.Event,
        ready: asyncio.Event | None = None,
        grace: float = SHUTDOWN_GRACE,
    ) -> None:
        """Consume until ``stop`` is set (or a subscriber cannot start), then shut down."""
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            for subscription in self.subscriptions:
                await subscription.start()
            failures: list[asyncio.Future[Any]] = [s.failed for s in self.subscriptions]
            all_ready: asyncio.Future[Any] = asyncio.ensure_future(self._all_ready())
            await asyncio.wait([stopped, all_ready, *failures], return_when=asyncio.FIRST_COMPLETED)
            if all_ready.done() and ready is not None:
                ready.set()
            await asyncio.wait([stopped, *failures], return_when=asyncio.FIRST_COMPLETED)
            all_ready.cancel()
            for failure in failures:
                if failure.done():
                    failure.result()
        finally:
            stopped.cancel()
            await asyncio.gather(*(s.stop(grace) for s in self.subscriptions))
            for forwarder in self._forwarders:
                await forwarder.close()


async def run_worker(settings: Settings, config: str) -> None:
    """Run every subscriber of the file ``config`` until SIGTERM or SIGINT."""
    subscribers = load_subscribers(config)
    records = os.environ.get(RECORDS_ENV, "").strip().lower() != "off"
    worker = Worker(settings, subscribers, records=records)  # a bad handler is exit 2, now
    async with serving_metrics(settings, process="worker"):
        for sub in subscribers:
            _describe(sub)
        with stop_on_signals() as stop:
            await worker.run(stop)
    log.info("worker stopped")


def _describe(sub: Subscriber) -> None:
    """Log what the worker does with ``sub`` (one line, no secret)."""
    target = (
        f"forward to {shown_url(sub.forward_url)}" if sub.forward_url else f"handler {sub.handler}"
    )
    delays = ", ".join(f"{d / 1000:g}s" for d in sub.retry_delays_ms) or "none"
    extras = [f"prefetch {sub.prefetch}"]
    if sub.ordered:
        extras = [f"ordered over {sub.partitions} partitions (delays waited in place)"]
    if sub.clients:
        extras.append(f"clients {','.join(sub.clients)}")
    if sub.warehouses:
        extras.append(f"warehouses {','.join(sub.warehouses)}")
    if sub.rate_limit is not None:
        extras.append(
            f"rate limit {sub.rate_limit.text} for the subscriber as a whole "
            + ("(split over its partitions)" if sub.ordered else "(one worker at a time)")
        )
    if sub.signing_secrets_env:
        extras.append(f"signed with the secrets in {sub.signing_secrets_env}")
    log.info(
        "subscriber %s: events %s, %s, retry delays %s, %s",
        sub.name,
        ",".join(sub.events),
        target,
        delays,
        ", ".join(extras),
        extra={"subscriber": sub.name},
    )
