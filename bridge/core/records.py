"""The delivery record: one per delivery attempt of one webhook to one subscriber, and one
per operator action on a webhook (a replay, a discard).

Records are published to the stream ``<exchange>.deliveries`` (contract section 10) and
indexed by ``ledger`` into the ledger database. One stream message carries one record or
several: its body is their JSON objects joined by :data:`RECORD_SEPARATOR` (a newline, which
JSON as written here never holds raw), so a message of one record is that record's body;
every reader takes each record of a message (:func:`record_lines`).

This module is the one definition of their shape that the producers (worker, DLQ tools,
archive replay, console) and the consumer (the ledger's indexer) share. Pure data and
functions: nothing here does I/O.
:func:`DeliveryRecord.from_body` raises :class:`RecordError` for a body that is not a record
of this version, so the indexer can count and skip it rather than stop.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

DELIVERIES_SUFFIX: Final = ".deliveries"
RECORD_TYPE: Final = "delivery-record"
"""The AMQP ``type`` property of a record message."""
RECORD_VERSION: Final = 1
RECORD_SEPARATOR: Final = b"\n"
"""Between two records in one message's body."""
ANSWER_LIMIT: Final = 200
"""At most this many bytes of a forward target's answer are kept in a record."""
ERROR_LIMIT: Final = 1024


def record_lines(body: bytes) -> list[bytes]:
    """The record bodies in one deliveries message's ``body`` (a record JSON object each,
    in the order they were written); blank lines are no records, and a body with nothing
    but them is given back whole (to be found malformed)."""
    if RECORD_SEPARATOR not in body:
        return [body]
    return [line for line in body.split(RECORD_SEPARATOR) if line.strip()] or [body]


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


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNT = itertools.count(int.from_bytes(os.urandom(4)))


def new_record_id() -> str:
    """A fresh record id: 32 hex digits, also the record message's AMQP ``message_id``.

    A random 64-bit prefix per process (made again in a forked child) and a 64-bit count:
    unique without a system call per record (one per attempt, on the worker's hot path)."""
    return f"{_ID_PREFIX}{next(_ID_COUNT) & 0xFFFFFFFFFFFFFFFF:016x}"


def _new_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_prefix)

_second = -1
_second_text = ""


def now_rfc3339() -> str:
    """The current time as the records write it: RFC 3339, UTC, microseconds, ``Z``
    (the part up to the second formatted once a second)."""
    global _second, _second_text
    now = time.time()
    second = int(now)
    if second != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    return f"{_second_text}.{int((now - second) * 1_000_000):06d}Z"


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
    retry_after: float | None = None
    """For ``throttled``: the seconds the subscriber pauses (the target's ``Retry-After``, cut
    to the worker's limit), so readers can tell when it calls again; ``None`` otherwise."""

    def to_body(self) -> bytes:
        """The record's message body (JSON); ``answer`` and ``error`` cut to their limits."""
        return RecordBodies(self.subscriber, self.source, self.operator).body(
            self.record_id,
            self.message_id,
            self.event,
            self.order_id,
            self.order_number,
            self.attempt,
            self.outcome,
            self.status,
            self.answer,
            self.error,
            self.duration_ms,
            self.at,
            self.retry_after,
        )

    @classmethod
    def from_body(cls, body: bytes) -> DeliveryRecord:
        """Parse a record body; :class:`RecordError` names what is wrong with it."""
        data = json_object(body)
        if data.get("v") != RECORD_VERSION:
            raise RecordError(f"unknown record version {data.get('v')!r}")
        try:
            return cls(**{name: read(data, name) for name, read in _READERS})
        except ValueError as exc:
            raise RecordError(str(exc)) from None


class RecordBodies:
    """The bodies of one writer's records (one ``subscriber``, ``source`` and ``operator``:
    a worker's subscriber): the record's JSON object, ``"v"`` then the fields in
    :class:`DeliveryRecord`'s order, ``answer`` and ``error`` cut to their limits. The
    writer's fields are serialised once; each record serialises only its own (a record per
    attempt, on the worker's hot path)."""

    __slots__ = ("_middle", "_tail")

    def __init__(self, subscriber: str, source: Source, operator: str | None) -> None:
        # The record's fields in DeliveryRecord's order: v, record_id, message_id, then the
        # writer's subscriber, the attempt's event ... at, then the writer's source and
        # operator (and a throttle's retry_after).
        self._middle = b',"subscriber":' + orjson.dumps(subscriber) + b","
        self._tail = b',"source":' + orjson.dumps(source) + b',"operator":' + orjson.dumps(operator)

    def body(
        self,
        record_id: str,
        message_id: str,
        event: str,
        order_id: str | None,
        order_number: str | None,
        attempt: int,
        outcome: Outcome,
        status: int | None,
        answer: str | None,
        error: str | None,
        duration_ms: float | None,
        at: str,
        retry_after: float | None = None,
    ) -> bytes:
        """The body of one record of this writer (:class:`DeliveryRecord`'s fields but the
        writer's own)."""
        head = orjson.dumps({"v": RECORD_VERSION, "record_id": record_id, "message_id": message_id})
        attempt_fields = orjson.dumps(
            {
                "event": event,
                "order_id": order_id,
                "order_number": order_number,
                "attempt": attempt,
                "outcome": outcome,
                "status": status,
                "answer": None if answer is None else cut(answer, ANSWER_LIMIT),
                "error": None if error is None else cut(error, ERROR_LIMIT),
                "duration_ms": duration_ms,
                "at": at,
            }
        )
        # Only a throttle has retry_after: a reader of an older record sees none.
        end = b"}" if retry_after is None else b',"retry_after":' + orjson.dumps(retry_after) + b"}"
        return b"".join((head[:-1], self._middle, attempt_fields[1:-1], self._tail, end))


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


def _outcome(data: dict[str, Any], key: str) -> Outcome:
    return Outcome(required_text(data, key))


def _source(data: dict[str, Any], key: str) -> Source:
    return Source(required_text(data, key))


_READERS: Final[tuple[tuple[str, Callable[[dict[str, Any], str], Any]], ...]] = (
    ("record_id", required_text),
    ("message_id", required_text),
    ("subscriber", required_text),
    ("event", required_text),
    ("order_id", _optional_text),
    ("order_number", _optional_text),
    ("attempt", _int),
    ("outcome", _outcome),
    ("status", _optional_int),
    ("answer", _optional_text),
    ("error", _optional_text),
    ("duration_ms", _optional_float),
    ("at", required_text),
    ("source", _source),
    ("operator", _optional_text),
    ("retry_after", _optional_float),
)
"""How :meth:`DeliveryRecord.from_body` reads each field (a :class:`RecordError`, or a
``ValueError`` for an unknown outcome or source, when it is not of its kind)."""
