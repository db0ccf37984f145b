"""The four Mintsoft order events: routing keys, the deterministic message id, and the
order headers read from a webhook body."""

from __future__ import annotations

from hashlib import sha256
from typing import Any, Final

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
