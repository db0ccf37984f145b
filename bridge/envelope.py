"""What is published for one webhook: routing key, body and AMQP properties, as plain data
(so the spool can keep it and publish it later exactly as it would have been)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pamqp.commands import Basic

from bridge.events import APP_ID, invalid_routing_key, message_id, order_headers, routing_key


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message for the webhook exchange."""

    event: str
    routing_key: str
    body: bytes
    message_id: str
    received_at: float
    headers: dict[str, str]

    def properties(self) -> Basic.Properties:
        """The AMQP properties of the contract: persistent, JSON, typed by event."""
        return Basic.Properties(
            content_type="application/json",
            delivery_mode=2,
            message_type=self.event,
            app_id=APP_ID,
            timestamp=datetime.fromtimestamp(int(self.received_at), UTC),
            message_id=self.message_id,
            headers=dict(self.headers),
        )


def rfc3339(epoch: float) -> str:
    """``2026-11-27T15:02:10.123Z`` for a Unix time."""
    millis = int(epoch * 1000)
    return f"{_seconds_rfc3339(millis // 1000)}.{millis % 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _seconds_rfc3339(second: int) -> str:
    # Called per webhook, but the part up to the second changes once a second.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def webhook_envelope(
    event: str, body: bytes, document: Any, request_id: str, received_at: float
) -> Envelope:
    """The envelope of an accepted webhook, headers taken from its parsed ``document``."""
    headers = {"x-event": event, "x-received-at": rfc3339(received_at), "x-request-id": request_id}
    headers.update(order_headers(document))
    return Envelope(event, routing_key(event), body, message_id(event, body), received_at, headers)


def quarantine_envelope(event: str, body: bytes, request_id: str, received_at: float) -> Envelope:
    """The envelope of an authenticated body that is not JSON, kept for inspection."""
    headers = {"x-event": event, "x-received-at": rfc3339(received_at), "x-request-id": request_id}
    return Envelope(
        event, invalid_routing_key(event), body, message_id(event, body), received_at, headers
    )
