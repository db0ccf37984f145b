"""Prometheus metrics. Labels are never secrets or order ids: only events, codes, reasons."""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

WEBHOOKS = Counter(
    "bridge_webhooks_total",
    "Webhook requests answered, by event and status code",
    ["event", "code"],
)
PUBLISH_RESULTS = Counter(
    "bridge_publish_total",
    "Publishes by outcome: confirmed, returned, nacked, timeout, channel_closed, no_broker",
    ["result"],
)
PUBLISH_SECONDS = Histogram(
    "bridge_publish_seconds",
    "Time from publish to broker confirm",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUBLISHED_BYTES = Counter(
    "bridge_published_bytes",
    "Body bytes of the webhooks the broker confirmed (what the archive grows by)",
)
ARCHIVE_MAX_BYTES = Gauge(
    "bridge_archive_max_bytes",
    "BRIDGE_ARCHIVE_MAX_BYTES of this receiver while the archive is on, else 0",
)
BROKER_CONNECTED = Gauge("bridge_broker_connected", "1 while connected to the broker")

SPOOL_DEPTH = Gauge("bridge_spool_depth", "Messages in the local spool, waiting to be published")
SPOOL_BYTES = Gauge("bridge_spool_bytes", "Bytes held in the local spool")
SPOOL_OLDEST_AGE = Gauge(
    "bridge_spool_oldest_age_seconds", "Age of the oldest message in the local spool"
)
SPOOL_DRAINED = Counter(
    "bridge_spool_drained_total", "Spooled messages published with a confirm and removed"
)
SPOOL_REJECTED = Counter(
    "bridge_spool_rejected_total", "Messages refused because the spool was full"
)


class _SpoolView(Protocol):
    depth: int
    bytes: int

    def oldest_age(self) -> float: ...


def watch_spool(spool: _SpoolView) -> None:
    """Read the spool gauges from ``spool`` at every scrape."""
    SPOOL_DEPTH.set_function(lambda: spool.depth)
    SPOOL_BYTES.set_function(lambda: spool.bytes)
    SPOOL_OLDEST_AGE.set_function(spool.oldest_age)


WORKER_MESSAGES = Counter(
    "bridge_worker_messages_total",
    "Worker messages by subscriber and outcome: consumed, acked, retried, dead_lettered",
    ["subscriber", "outcome"],
)
LEDGER_RECORDS_FAILED = Counter(
    "bridge_ledger_records_failed_total",
    "Delivery records the broker did not confirm (returned, nacked, timeout, channel_closed); "
    "the deliveries they describe went on",
    ["reason"],
)


def observer(histogram: Histogram) -> Callable[[float], None]:
    """``histogram.observe`` of one labelled child (no exemplar), for an observation per
    message: the same counts and sum, the amount's bucket found by bisection over the
    bounds rather than by prometheus_client's linear walk; a NaN (which no bucket counts)
    takes the library's own way. It reads the child's bounds, buckets and sum (the
    library's internals: tests/test_metrics_observer.py holds it to the library's counts);
    a prometheus_client without them gets its own ``observe`` back, slower, never wrong."""
    child: Any = histogram
    child._raise_if_not_observable()  # a labelled child, once, not per observation
    try:
        bounds: list[float] = list(child._upper_bounds)
        buckets = child._buckets
        add_to_sum = child._sum.inc
    except AttributeError:  # a release that renamed them: the library's way, not a crash
        return histogram.observe
    find = bisect.bisect_left

    def observe(amount: float) -> None:
        if amount != amount:  # NaN
            histogram.observe(amount)
            return
        add_to_sum(amount)
        # The first bound >= amount, as the library's `amount <= bound` walk finds it.
        buckets[find(bounds, amount)].inc(1)

    return observe


HANDLER_SECONDS = Histogram(
    "bridge_handler_seconds",
    "Time one handler call (or one forward) took",
    ["subscriber"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
FORWARDER_CIRCUIT_OPEN = Gauge(
    "bridge_forwarder_circuit_open",
    "1 while a forwarder's target is considered down and consumption is paused",
    ["subscriber"],
)


SYNC_ENROLLED = Counter(
    "bridge_sync_enrolled_total", "Mintsoft orders sync registered the bridge's URLs on"
)
SYNC_RECOVERED = Counter(
    "bridge_sync_recovered_total",
    "Webhooks Mintsoft did not deliver, recovered by sync from its API, by event",
    ["event"],
)
SYNC_CONFLICTS = Gauge(
    "bridge_sync_conflicts",
    "Orders whose connect action points at another system (left alone by sync)",
)
SYNC_CURSOR_LAG = Gauge(
    "bridge_sync_cursor_lag_seconds",
    "Seconds since sync last completed a scan of a cursor (how stale its view of Mintsoft is)",
    ["cursor"],
)
SYNC_PASS_FAILED = Gauge(
    "bridge_sync_last_pass_failed", "1 when sync's last pass had a failed step"
)
MINTSOFT_REQUESTS = Counter(
    "bridge_mintsoft_requests_total",
    "Mintsoft API requests by answer: the HTTP status, or error (no answer)",
    ["answer"],
)

LEDGER_LAG = Gauge(
    "bridge_ledger_lag_seconds",
    "How far the ledger's indexer is behind the streams (0 while caught up)",
)
UNDELIVERED_OLDEST = Gauge(
    "bridge_undelivered_oldest_seconds",
    "Age of the oldest webhook a subscriber takes that is not yet delivered, dead or discarded",
    ["subscriber"],
)
LEDGER_ROWS = Counter(
    "bridge_ledger_rows_total", "Rows the ledger's indexer wrote, by table", ["table"]
)
LEDGER_MALFORMED = Counter(
    "bridge_ledger_malformed_total",
    "Stream messages the ledger's indexer skipped as malformed, by table they were for",
    ["table"],
)

# Series that exist from the start (at 0), so increase() and alerts see the first one.
for _event in ("despatched", "cancelled", "delivered", "split"):
    SYNC_RECOVERED.labels(_event)
for _cursor in ("orders", "tracking"):
    SYNC_CURSOR_LAG.labels(_cursor)
MINTSOFT_REQUESTS.labels("200")
for _table in ("webhooks", "attempts"):
    LEDGER_ROWS.labels(_table)
    LEDGER_MALFORMED.labels(_table)
LEDGER_ROWS.labels("audit")


OWNERS: dict[str, tuple[str, ...]] = {
    "serve": (
        "bridge_webhooks",
        "bridge_publish",
        "bridge_published_bytes",
        "bridge_archive_max_bytes",
        "bridge_broker_connected",
        "bridge_spool",
    ),
    "worker": (
        "bridge_worker",
        "bridge_handler",
        "bridge_forwarder",
        "bridge_ledger_records",  # the delivery records the worker publishes
        "bridge_broker_connected",
    ),
    "sync": ("bridge_sync", "bridge_mintsoft", "bridge_publish", "bridge_broker_connected"),
    "ledger": (
        "bridge_ledger_lag",
        "bridge_ledger_rows",
        "bridge_ledger_malformed",
        "bridge_undelivered",
        "bridge_broker_connected",
    ),
}
"""Which process exports which ``bridge_*`` families (by name prefix): each process's
``/metrics`` shows its own, never another's stuck at 0 (a dashboard would read those as
"nothing happening"). Every family has an owner (tests/test_metrics_scrape.py checks)."""


class _Owned:
    """The default registry's families a process owns, and every non-``bridge_`` one (the
    process, platform and garbage-collector collectors)."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.prefixes = prefixes

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if not family.name.startswith("bridge_") or family.name.startswith(self.prefixes):
                yield family


def registry_of(process: str | None) -> CollectorRegistry:
    """What ``process`` (a key of :data:`OWNERS`) exports; ``None``: every family."""
    if process is None:
        return REGISTRY
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Owned(OWNERS[process]))
    return registry


def scraper(process: str | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /metrics`` of ``process``: Prometheus text format, its own families only."""
    registry = registry_of(process)

    async def scrape(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return scrape
