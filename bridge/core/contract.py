"""The message contract: the events (four order events and ASN booked-in), every AMQP
property value and header name, how headers are derived from a webhook body, and the
envelope that is published for one webhook.

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

ORDER_EVENTS: Final = ("despatched", "cancelled", "delivered", "split")
"""The order webhooks Mintsoft sends (ExtraCode1, 2, 3 and 5 of an order's connect action);
a subscriber's ``events = ["*"]`` means these four."""

ASN_BOOKED_IN: Final = "asn-booked-in"
"""The webhook Mintsoft sends when an ASN is booked in (ExtraCode1 of an ASN's connect
action); its body is ``GET /api/ASN/{id}``. Subscribers take it only by name."""

EVENTS: Final = (*ORDER_EVENTS, ASN_BOOKED_IN)
"""Every webhook the bridge takes (a route ``/webhooks/<event>`` each)."""

EXTRA_CODES: Final = {
    "despatched": "ExtraCode1",
    "cancelled": "ExtraCode2",
    "delivered": "ExtraCode3",
    "split": "ExtraCode5",
}
"""Which field of an order's connect action carries the callback URL of each order event."""

ASN_EXTRA_CODE: Final = "ExtraCode1"
"""The field of an ASN's connect action (``PUT /api/ASN/{id}/ConnectActions``) that carries
the ``asn-booked-in`` URL."""

APP_ID: Final = "mintsoft-bridge"
CONTENT_TYPE_JSON: Final = "application/json"

# AMQP headers of a published webhook (contract section 4).
HEADER_EVENT: Final = "x-event"
HEADER_RECEIVED_AT: Final = "x-received-at"
HEADER_REQUEST_ID: Final = "x-request-id"
HEADER_ORDER_ID: Final = "x-order-id"
HEADER_ORDER_NUMBER: Final = "x-order-number"
HEADER_CLIENT_ID: Final = "x-client-id"
HEADER_WAREHOUSE_ID: Final = "x-warehouse-id"
HEADER_SPLIT_ORDER_ID: Final = "x-split-order-id"
HEADER_ASN_ID: Final = "x-asn-id"

# AMQP headers the worker adds on the retry ladder and in the DLQ (contract section 5).
HEADER_ATTEMPT: Final = "x-attempt"
HEADER_ERROR: Final = "x-error"
HEADER_FAILED_AT: Final = "x-failed-at"

# HTTP headers: the forwarder's (contract section 5) and the request id both sides carry.
HTTP_EVENT: Final = "X-Mintsoft-Event"
HTTP_MESSAGE_ID: Final = "X-Message-Id"
HTTP_REQUEST_ID: Final = "X-Request-Id"
OCTET_STREAM: Final = "application/octet-stream"
# Standard Webhooks headers of a signed forward (contract section 5).
HTTP_WEBHOOK_ID: Final = "webhook-id"
HTTP_WEBHOOK_TIMESTAMP: Final = "webhook-timestamp"
HTTP_WEBHOOK_SIGNATURE: Final = "webhook-signature"

# AMQP headers of recovered, replayed and sentinel messages (contract sections 4, 7, 8).
HEADER_SOURCE: Final = "x-source"
"""Set by ``sync`` on a webhook it recovered (``reconcile``); absent on a received one."""
HEADER_REPLAYED_AT: Final = "x-replayed-at"
"""Set by ``archive replay`` on each copy: when it was copied (RFC 3339, UTC)."""
HEADER_REPLAY_ID: Final = "x-replay-id"
"""Set by ``archive replay`` on each copy: one id per replay run, to find or undo a run."""
HEADER_ARCHIVE_SENTINEL: Final = "x-archive-sentinel"
"""Marks the empty message ``archive find`` writes to the archive's end to know where it
ends; readers skip it, and it never reaches a subscriber (it bypasses the exchange)."""


def subscribed_events(events: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A subscriber's ``events`` spelled out: ``*`` stands for the four order events (an ASN
    body is no order: a handler written for orders must not start getting ASNs on an
    upgrade); ``asn-booked-in`` is taken only by name."""
    wanted = list(ORDER_EVENTS) if "*" in events else []
    wanted += [event for event in events if event != "*" and event not in wanted]
    return tuple(wanted)


_ROUTING_KEYS: Final = {ASN_BOOKED_IN: "asn.booked-in"}


def routing_key(event: str) -> str:
    """The routing key of an accepted webhook: ``order.<event>``, or ``asn.booked-in``."""
    return _ROUTING_KEYS.get(event) or "order." + event


def invalid_routing_key(event: str) -> str:
    """The routing key of a quarantined (non-JSON) body: ``invalid.<event>``."""
    return "invalid." + event


def message_id(event: str, body: bytes) -> str:
    """First 32 hex digits of sha256(event + newline + body): a resent webhook keeps its id."""
    digest = _event_digest(event).copy()
    digest.update(body)
    hexdigest: str = digest.hexdigest()
    return hexdigest[:32]


@functools.lru_cache(maxsize=16)
def _event_digest(event: str) -> Any:
    # The hash of "<event>\n", copied per webhook rather than hashed again (a handful of
    # events; the copy is a fixed-size state, whatever the event's length).
    digest = sha256(event.encode())
    digest.update(b"\n")
    return digest


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        text = str(value)
        return text[:200] if text else None
    return None


def order_headers(document: Any) -> dict[str, str]:
    """``x-order-id``, ``x-order-number``, ``x-client-id``, ``x-warehouse-id`` and
    ``x-split-order-id`` from a parsed body, for those present (all as strings: a
    subscriber's filter matches them as strings).

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
            order_id = first.get("OrderId", order.get("ID"))
            return _order_headers(order, order_id, first.get("SplitOrderId"))
        shipment = first.get("OrderShipment")
        if isinstance(shipment, dict):
            _put(headers, HEADER_ORDER_ID, shipment.get("OrderId"))
        return headers
    if isinstance(document, dict):
        order_id = document.get("ID", document.get("OrderId"))
        return _order_headers(document, order_id, document.get("SplitOrderId"))
    return headers


def _order_headers(order: dict[str, Any], order_id: Any, split_order_id: Any) -> dict[str, str]:
    """The headers of an order with fields ``order``; its id and split id come apart (a
    split holds them beside the order, not in it)."""
    headers: dict[str, str] = {}
    _put(headers, HEADER_ORDER_ID, order_id)
    _put(headers, HEADER_ORDER_NUMBER, order.get("OrderNumber"))
    _put(headers, HEADER_CLIENT_ID, order.get("ClientId"))
    _put(headers, HEADER_WAREHOUSE_ID, order.get("WarehouseId"))
    _put(headers, HEADER_SPLIT_ORDER_ID, split_order_id)
    return headers


def asn_headers(document: Any) -> dict[str, str]:
    """``x-asn-id`` (the ASN's ``ID``), ``x-client-id`` and ``x-warehouse-id`` from a parsed
    ASN body (``GET /api/ASN/{id}``), for those present."""
    headers: dict[str, str] = {}
    if isinstance(document, dict):
        _put(headers, HEADER_ASN_ID, document.get("ID"))
        _put(headers, HEADER_CLIENT_ID, document.get("ClientId"))
        _put(headers, HEADER_WAREHOUSE_ID, document.get("WarehouseId"))
    return headers


def webhook_headers(event: str, document: Any) -> dict[str, str]:
    """The headers a webhook of ``event`` derives from its parsed body."""
    return asn_headers(document) if event == ASN_BOOKED_IN else order_headers(document)


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
    content_type: str = CONTENT_TYPE_JSON
    """``application/json`` for a webhook; the sender's own for a quarantined body."""

    def properties(self) -> Basic.Properties:
        """The AMQP properties of the contract: persistent, JSON, typed by event."""
        return Basic.Properties(
            content_type=self.content_type,
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
    headers = {
        HEADER_EVENT: event,
        HEADER_RECEIVED_AT: rfc3339(received_at),
        HEADER_REQUEST_ID: request_id,
    }
    headers.update(webhook_headers(event, document))
    return Envelope(event, routing_key(event), body, message_id(event, body), received_at, headers)


def quarantine_envelope(
    event: str,
    body: bytes,
    request_id: str,
    received_at: float,
    content_type: str | None = None,
) -> Envelope:
    """The envelope of an authenticated body that is not JSON, kept for inspection with the
    sender's ``Content-Type`` (``application/octet-stream`` when it sent none usable)."""
    headers = {
        HEADER_EVENT: event,
        HEADER_RECEIVED_AT: rfc3339(received_at),
        HEADER_REQUEST_ID: request_id,
    }
    return Envelope(
        event,
        invalid_routing_key(event),
        body,
        message_id(event, body),
        received_at,
        headers,
        sender_content_type(content_type),
    )


def sender_content_type(raw: str | None) -> str:
    """The sender's ``Content-Type`` if it fits an AMQP short string of printable ASCII,
    else ``application/octet-stream`` (bytes of unknown type)."""
    value = (raw or "").strip()
    if value and len(value) <= 255 and value.isascii() and value.isprintable():
        return value
    return OCTET_STREAM
