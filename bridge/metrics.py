"""Prometheus metrics. Labels are never secrets or order ids: only events, codes, reasons."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
BROKER_CONNECTED = Gauge("bridge_broker_connected", "1 while connected to the broker")
