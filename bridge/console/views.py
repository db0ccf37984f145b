"""Turning broker messages into what a page shows: dead-letter rows, headers with secrets
masked, and pretty-printed bodies.

Anything that looks like a credential (a header named like ``authorization``, ``api-key``,
``token``, ``password``, ``secret`` or ``cookie``; ``APIKEY=...`` or ``Authorization: ...``
inside a text such as an error) is shown as ``***``: an error text may quote a forwarder's
request, and a page must never show a key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from bridge.core.contract import HEADER_ORDER_ID, HEADER_ORDER_NUMBER, HEADER_RECEIVED_AT
from bridge.core.secrets import MASK, mask
from bridge.worker.message import (
    ERROR_HEADER,
    FAILED_AT_HEADER,
    delivery_number,
    event_of,
    plain_headers,
)

_SECRET_NAME = re.compile(r"authori[sz]ation|api[-_]?key|token|passw|secret|cookie", re.I)
Secrets = Sequence[str]
"""The console's configured secrets (:attr:`Console.secrets`), masked wherever shown."""


def mask_text(text: str, secrets: Secrets = ()) -> str:
    """``text`` with every secret and anything following ``APIKEY=`` / ``Authorization:``
    (...) masked (:func:`bridge.core.secrets.mask`)."""
    return mask(text, secrets)


def _shown(value: Any, secrets: Secrets) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, dict):
        return safe_headers(value, secrets)
    if isinstance(value, list):
        return [_shown(item, secrets) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def safe_headers(headers: dict[str, Any] | None, secrets: Secrets = ()) -> dict[str, Any]:
    """Headers for a page: decoded, sorted, credentials masked."""
    return {
        key: MASK if _SECRET_NAME.search(key) else _shown(value, secrets)
        for key, value in sorted((headers or {}).items())
    }


def properties_shown(properties: Basic.Properties, secrets: Secrets = ()) -> dict[str, Any]:
    """The AMQP properties worth showing (headers are shown on their own)."""
    fields = {
        "message_id": properties.message_id,
        "type": properties.message_type,
        "content_type": properties.content_type,
        "content_encoding": properties.content_encoding,
        "delivery_mode": properties.delivery_mode,
        "app_id": properties.app_id,
        "timestamp": properties.timestamp,
        "correlation_id": properties.correlation_id,
    }
    return {k: _shown(v, secrets) for k, v in fields.items() if v is not None}


_COUNT = re.compile(r"[0-9]{1,12}")  # not isdigit(): "²" passes it and int() then raises


def confirmed_count(raw: object) -> int:
    """The count a confirmation page carried (how many the operator agreed to); a 400
    when it is not a whole number (it is never "no limit")."""
    text = raw if isinstance(raw, str) else ""
    if not _COUNT.fullmatch(text):
        raise web.HTTPBadRequest(
            text="Confirm from the page that counted them first: the count is not a number."
        )
    return int(text)


def pretty_body(body: bytes) -> str:
    """Indented JSON when the body is JSON, else the text as received (invalid UTF-8
    replaced)."""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def short_time(text: str | None) -> str:
    """``2026-11-30T10:00:01.123Z`` -> ``2026-11-30 10:00:01`` (UTC, as stored)."""
    if not text:
        return "-"
    return text.replace("T", " ")[:19]


def format_time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def span(oldest: datetime | None, newest: datetime | None) -> str:
    """``3d 4h``, ``2h 5m``, ``40s``: how much time the archive covers."""
    if oldest is None or newest is None:
        return "-"
    seconds = max(0, int((newest - oldest).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as the pages show it."""

    message_id: str
    event: str
    order_id: str
    order_number: str
    attempts: int
    error: str
    failed_at: str
    received_at: str
    size: int
    headers: dict[str, Any]
    properties: dict[str, Any]
    body: bytes

    def matches(self, event: str, text: str) -> bool:
        if event and self.event != event:
            return False
        if not text:
            return True
        haystack = " ".join(
            (self.message_id, self.order_id, self.order_number, self.error, self.event)
        ).lower()
        return text.lower() in haystack

    def about(self, query: str) -> bool:
        """Whether this dead letter is for order id / order number / message id ``query``."""
        return query in {self.order_id, self.order_number, self.message_id}


def dead_letter(got: DeliveredMessage, secrets: Secrets = ()) -> DeadLetter:
    properties = got.header.properties
    headers = plain_headers(properties.headers)
    return DeadLetter(
        message_id=properties.message_id or "-",
        event=event_of(properties, headers, got.routing_key or ""),
        order_id=str(headers.get(HEADER_ORDER_ID) or "-"),
        order_number=str(headers.get(HEADER_ORDER_NUMBER) or "-"),
        attempts=delivery_number(headers),
        error=mask_text(" ".join(str(headers.get(ERROR_HEADER) or "-").split()), secrets),
        failed_at=short_time(_str(headers.get(FAILED_AT_HEADER))),
        received_at=short_time(_str(headers.get(HEADER_RECEIVED_AT))),
        size=len(got.body or b""),
        headers=safe_headers(headers, secrets),
        properties=properties_shown(properties, secrets),
        body=got.body or b"",
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()
