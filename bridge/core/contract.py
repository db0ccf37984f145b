"""The message contract: the four events, every AMQP property value and header name, how
headers are derived from a webhook body, and the envelope that is published for one webhook.

Every other module takes these names from here (the hand-built frames, the spool, the
worker's :class:`~bridge.worker.message.Message`, the DLQ tools and the logs), so a header
name is spelled once. Pure data and functions: nothing here does I/O or raises.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Final

from pamqp.commands import Basic

EVENTS: Final = ("despatched", "cancelled", "delivered", "split")
"""The webhook events Mintsoft sends (ExtraCode1, 2, 3 and 5 of a connect action)."""

EXTRA_CODES: Final = {
    "despatched": "ExtraCode1",
    "cancelled": "ExtraCode2",
    "delivered": "ExtraCode3",
    "split": "ExtraCode5",
}
"""Which connect-action field carries the callback URL of each event."""

APP_ID: Final = "mintsoft-bridge"

HEADER_SOURCE: Final = "x-source"
"""Set to ``reconcile`` on a webhook that ``sync`` recovered from the Mintsoft API."""


def routing_key(event: str) -> str:
    """The routing key of an accepted webhook: ``order.<event>``."""
    return "order." + event


def invalid_routing_key(event: str) -> str:
    """The routing key of a quarantined (non-JSON) body: ``invalid.<event>``."""
    return "invalid." + event


def message_id(event: str, body: bytes) -> str:
    """First 32 hex digits of sha256(event + newline + body): a resent webhook keeps its id."""
    digest = sha256(event.encode())
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()[:32]


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        text = str(value)
        return text[:200] if text else None
    return None


def order_headers(document: Any) -> dict[str, str]:
    """``x-order-id``, ``x-order-number``, ``x-client-id`` and ``x-split-order-id`` from a
    parsed body, for those present.

    An order (despatched, cancelled) carries them at the top level. A split is a list of
    ``{Order, SplitOrder, OrderId, SplitOrderId}``; a delivered webhook a list of tracking
    events, whose order is ``OrderShipment.OrderId`` (their own ``ID`` is the event's).
    """
    headers: dict[str, str] = {}
    if isinstance(document, list):
        if not document or not isinstance(document[0], dict):
            return headers
        first: dict[str, Any] = document[0]
        if "SplitOrderId" in first or "Order" in first:
            nested = first.get("Order")
            order: dict[str, Any] = nested if isinstance(nested, dict) else {}
            _put(headers, "x-order-id", first.get("OrderId", order.get("ID")))
            _put(headers, "x-order-number", order.get("OrderNumber"))
            _put(headers, "x-client-id", order.get("ClientId"))
            _put(headers, "x-split-order-id", first.get("SplitOrderId"))
            return headers
        shipment = first.get("OrderShipment")
        if isinstance(shipment, dict):
            _put(headers, "x-order-id", shipment.get("OrderId"))
        return headers
    if isinstance(document, dict):
        _put(headers, "x-order-id", document.get("ID", document.get("OrderId")))
        _put(headers, "x-order-number", document.get("OrderNumber"))
        _put(headers, "x-client-id", document.get("ClientId"))
        _put(headers, "x-split-order-id", document.get("SplitOrderId"))
    return headers


def _put(headers: dict[str, str], name: str, value: Any) -> None:
    text = _scalar(value)
    if text is not None:
        headers[name] = text


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
