"""The message a handler receives, and the AMQP properties of its copies on the retry ladder
and in the dead-letter queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pamqp.commands import Basic

from bridge.core.contract import (
    HEADER_ATTEMPT,
    HEADER_ERROR,
    HEADER_EVENT,
    HEADER_FAILED_AT,
    HEADER_ORDER_ID,
    HEADER_REQUEST_ID,
)

# The names the worker side has always used for these three.
ATTEMPT_HEADER = HEADER_ATTEMPT
ERROR_HEADER = HEADER_ERROR
FAILED_AT_HEADER = HEADER_FAILED_AT
MAX_ERROR_BYTES = 1024
# Headers the broker adds when it dead-letters or redelivers; a copy we publish starts
# without them. A quorum queue's delivery counter (x-delivery-count, x-acquired-count on
# RabbitMQ 4.3) counts handings-out of *that* message: `dlq list` and the console raise it
# on every view, so a copy keeping it would look like a crash loop (acks.redelivery_count).
_BROKER_HEADERS = (
    "x-acquired-count",
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


class Message:
    """One delivered webhook.

    ``event`` (``despatched`` ...), ``body`` (the raw bytes Mintsoft sent), ``json`` (parsed on
    first use), ``message_id`` (deterministic: the same webhook always has the same id, use
    it to deduplicate), ``headers``, ``routing_key`` (the webhook's own, ``order.<event>``, on
    every delivery, retries and replays included), ``delivery_routing_key`` (this delivery's:
    the queue's name after a retry step or a ``dlq replay``), ``subscriber`` (whose queue it
    came from), and ``attempt``: 1 on the first call of the handler, counting every retry, in
    process and along the retry ladder.
    """

    __slots__ = (
        "_json",
        "attempt",
        "body",
        "content_type",
        "delivery",
        "delivery_routing_key",
        "event",
        "headers",
        "message_id",
        "redelivered",
        "routing_key",
        "subscriber",
    )

    def __init__(
        self,
        *,
        event: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, Any],
        routing_key: str = "",
        subscriber: str = "",
        attempt: int = 1,
        delivery: int = 1,
        content_type: str = "application/json",
        redelivered: bool = False,
        delivery_routing_key: str | None = None,
    ) -> None:
        self.event = event
        self.body = body
        self.message_id = message_id
        self.headers: dict[str, Any] = dict(headers)
        self.routing_key = routing_key
        self.delivery_routing_key = (
            routing_key if delivery_routing_key is None else delivery_routing_key
        )
        self.subscriber = subscriber
        self.attempt = attempt
        self.delivery = delivery
        self.content_type = content_type
        self.redelivered = redelivered
        self._json: Any = _UNPARSED

    @property
    def json(self) -> Any:
        """The body parsed as JSON (on first use; raises ``orjson.JSONDecodeError``)."""
        if self._json is _UNPARSED:
            self._json = orjson.loads(self.body)
        return self._json

    @property
    def order_id(self) -> str | None:
        """The Mintsoft order id the receiver read from the body, when it had one."""
        return _text(self.headers.get(HEADER_ORDER_ID))

    @property
    def request_id(self) -> str | None:
        """The receiver's request id, to follow one webhook through the logs."""
        return _text(self.headers.get(HEADER_REQUEST_ID))

    def log_fields(self) -> dict[str, Any]:
        """The extra fields of every worker log line about this message (pass them as
        ``extra=`` to follow one webhook from the receiver to your handler)."""
        return {
            "subscriber": self.subscriber,
            "event": self.event,
            "message_id": self.message_id,
            "order_id": self.order_id,
            "request_id": self.request_id,
            "attempt": self.attempt,
        }

    def __repr__(self) -> str:
        return (
            f"Message(event={self.event!r}, message_id={self.message_id!r}, attempt={self.attempt})"
        )


_UNPARSED: Any = object()


def delivered_message(
    event: str,
    body: bytes,
    message_id: str,
    headers: dict[str, Any],
    routing_key: str,
    delivery_routing_key: str,
    subscriber: str,
    attempt: int,
    delivery: int,
    content_type: str,
    redelivered: bool,
) -> Message:
    """The :class:`Message` of a delivery, as ``Message(...)`` gives it but taking
    ``headers`` as they are (a dict of the caller's own, made for this message): one per
    delivery, on the worker's hot path."""
    message = Message.__new__(Message)
    message.event = event
    message.body = body
    message.message_id = message_id
    message.headers = headers
    message.routing_key = routing_key
    message.delivery_routing_key = delivery_routing_key
    message.subscriber = subscriber
    message.attempt = attempt
    message.delivery = delivery
    message.content_type = content_type
    message.redelivered = redelivered
    message._json = _UNPARSED
    return message


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def plain_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """AMQP headers with byte strings decoded, as handlers expect them."""
    return {
        key: value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for key, value in (headers or {}).items()
    }


def delivery_number(headers: Mapping[str, Any]) -> int:
    """Which delivery along the ladder this is: our ``x-attempt`` header, 1 when absent."""
    value = headers.get(ATTEMPT_HEADER)
    try:
        number = int(value) if value is not None else 1
    except (TypeError, ValueError):
        return 1
    return max(number, 1)


def event_of(properties: Basic.Properties, headers: Mapping[str, Any], routing_key: str) -> str:
    """The event: the ``type`` property, else ``x-event``, else the routing key's last part."""
    return str(
        properties.message_type
        or _text(headers.get(HEADER_EVENT))
        or routing_key.rsplit(".", 1)[-1]
    )


def error_text(exc: BaseException) -> str:
    """``Type: message``, cut to 1 KiB of UTF-8 for the ``x-error`` header."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    data = text.encode("utf-8")
    if len(data) <= MAX_ERROR_BYTES:
        return text
    return data[: MAX_ERROR_BYTES - 3].decode("utf-8", "ignore") + "..."


def copy_properties(properties: Basic.Properties, headers: Mapping[str, Any]) -> Basic.Properties:
    """The original message's properties (id, type, timestamp ...) with new ``headers``,
    persistent, and without the broker's dead-letter bookkeeping."""
    kept = {k: v for k, v in headers.items() if k not in _BROKER_HEADERS}
    return Basic.Properties(
        content_type=properties.content_type or "application/json",
        content_encoding=properties.content_encoding,
        delivery_mode=2,
        message_type=properties.message_type,
        app_id=properties.app_id,
        timestamp=properties.timestamp,
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        headers=kept,
    )
