"""The delivery record: one per delivery attempt of one webhook to one subscriber, and one
per operator action on a webhook (a replay, a discard).

Records are published to the stream ``<exchange>.deliveries`` (contract section 10) and
indexed by ``ledger`` into the ledger database. This module is the one definition of their
shape that the producers (worker, DLQ tools, archive replay, console) and the consumer (the
ledger's indexer) share. Pure data and functions: nothing here does I/O.
:func:`DeliveryRecord.from_body` raises :class:`RecordError` for a body that is not a record
of this version, so the indexer can count and skip it rather than stop.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import orjson

DELIVERIES_SUFFIX: Final = ".deliveries"
RECORD_TYPE: Final = "delivery-record"
"""The AMQP ``type`` property of a record message."""
RECORD_VERSION: Final = 1
ANSWER_LIMIT: Final = 200
"""At most this many bytes of a forward target's answer are kept in a record."""
ERROR_LIMIT: Final = 1024


def deliveries_stream(exchange: str) -> str:
    """The name of the stream that holds the delivery records of ``exchange``."""
    return exchange + DELIVERIES_SUFFIX


class Outcome(StrEnum):
    """What one attempt (or one operator action) came to."""

    DELIVERED = "delivered"
    """The handler returned, or the forward target answered 2xx: the message was acked."""
    FAILED = "failed"
    """This attempt failed; the message will be tried again (in process or on the ladder)."""
    THROTTLED = "throttled"
    """The target asked to wait (429 / Retry-After) or the rate limit deferred the message."""
    DEAD = "dead"
    """Moved to the subscriber's DLQ."""
    REPLAYED = "replayed"
    """Put back into the subscriber's queue by ``dlq replay`` or ``archive replay``."""
    DISCARDED = "discarded"
    """Removed from the DLQ by an operator."""


class Source(StrEnum):
    """Which part of the bridge wrote a record."""

    WORKER = "worker"
    DLQ_REPLAY = "dlq-replay"
    ARCHIVE_REPLAY = "archive-replay"
    CONSOLE = "console"


class RecordError(ValueError):
    """A body on the deliveries stream that is not a delivery record of this version."""


def new_record_id() -> str:
    """A fresh record id: 32 hex digits, also the record message's AMQP ``message_id``."""
    return uuid.uuid4().hex


def now_rfc3339() -> str:
    """The current time as the records write it: RFC 3339, UTC, microseconds, ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cut(text: str | None, limit: int) -> str | None:
    """``text`` cut to at most ``limit`` UTF-8 bytes (never splitting a character)."""
    if text is None:
        return None
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One record; the fields are the JSON body's, in contract section 10's terms."""

    record_id: str
    message_id: str
    subscriber: str
    event: str
    order_id: str | None
    order_number: str | None
    attempt: int
    outcome: Outcome
    status: int | None
    answer: str | None
    error: str | None
    duration_ms: float | None
    at: str
    source: Source
    operator: str | None

    def to_body(self) -> bytes:
        """The record's message body (JSON); ``answer`` and ``error`` cut to their limits."""
        # Written out rather than dataclasses.asdict (a deep copy): one record per delivery
        # attempt, on the worker's hot path.
        return orjson.dumps(
            {
                "v": RECORD_VERSION,
                "record_id": self.record_id,
                "message_id": self.message_id,
                "subscriber": self.subscriber,
                "event": self.event,
                "order_id": self.order_id,
                "order_number": self.order_number,
                "attempt": self.attempt,
                "outcome": str(self.outcome),
                "status": self.status,
                "answer": cut(self.answer, ANSWER_LIMIT),
                "error": cut(self.error, ERROR_LIMIT),
                "duration_ms": self.duration_ms,
                "at": self.at,
                "source": str(self.source),
                "operator": self.operator,
            }
        )

    @classmethod
    def from_body(cls, body: bytes) -> DeliveryRecord:
        """Parse a record body; :class:`RecordError` names what is wrong with it."""
        data = json_object(body)
        if data.get("v") != RECORD_VERSION:
            raise RecordError(f"unknown record version {data.get('v')!r}")
        try:
            return cls(
                record_id=required_text(data, "record_id"),
                message_id=required_text(data, "message_id"),
                subscriber=required_text(data, "subscriber"),
                event=required_text(data, "event"),
                order_id=_optional_text(data, "order_id"),
                order_number=_optional_text(data, "order_number"),
                attempt=_int(data, "attempt"),
                outcome=Outcome(required_text(data, "outcome")),
                status=_optional_int(data, "status"),
                answer=_optional_text(data, "answer"),
                error=_optional_text(data, "error"),
                duration_ms=_optional_float(data, "duration_ms"),
                at=required_text(data, "at"),
                source=Source(required_text(data, "source")),
                operator=_optional_text(data, "operator"),
            )
        except ValueError as exc:
            raise RecordError(str(exc)) from None


def json_object(body: bytes) -> dict[str, Any]:
    """A record's ``body`` as a JSON object; else a :class:`RecordError` saying why not."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RecordError("not a JSON object")
    return data


def required_text(data: dict[str, Any], key: str) -> str:
    """``data[key]``, a non-empty string; else a :class:`RecordError` naming ``key``."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RecordError(f"{key} must be a non-empty string")
    return value


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"{key} must be a string or null")
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{key} must be an integer")
    return value


def _optional_int(data: dict[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _int(data, key)


def _optional_float(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RecordError(f"{key} must be a number or null")
    return float(value)
