"""Writing delivery records (:mod:`bridge.core.records`) to ``<exchange>.deliveries``.

A record goes through the one confirmed publish (:mod:`bridge.amqp.publisher`) on the
channel it is given (the worker's: the channel of the message it describes), to the default
exchange with the stream's name as routing key. :func:`send_record` never waits for the
confirm and never raises: a record the broker returns (the stream is missing), nacks (full,
or an alarm), does not confirm within :data:`RECORD_TIMEOUT` seconds, or loses with its
channel is counted in ``bridge_ledger_records_failed_total{reason}`` and logged, and
whatever the record describes goes on regardless.

The worker's records (:func:`add_record`, one per attempt) travel in runs: the records one
channel gathers while its acks wait (a loop turn, or up to
:data:`~bridge.amqp.aiormq_internals.HOLD_SECONDS` on a consumer's channel, see
:func:`bridge.amqp.pipeline.set_prefetch`) leave as one stream message, its body the
records' JSON joined by newlines (:func:`bridge.core.records.record_lines` reads them back;
a run of one is the lone record's body), written just before those acks
(:class:`~bridge.amqp.aiormq_internals.FrameBatch`'s ``before_last``), so every record
still precedes the ack of its message, on the same channel. A run is one publish and one
confirm for the broker instead of one per record; a run the broker refuses counts each of
its records as failed. A run is published early at :data:`RUN_RECORDS` records or
:data:`RUN_BYTES` bytes (a bounded message for the ledger to read). On aiormq's public path
(no frame batch, acks written one by one) each record is its own message, as before.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import TypedDict, Unpack

from aiormq.abc import AbstractChannel

from bridge.amqp import aiormq_internals as internals
from bridge.amqp.publisher import FAST, Confirms, Outcome, confirms
from bridge.core import metrics
from bridge.core.audit import Action, AuditRecord, Via, audit_record
from bridge.core.contract import Envelope
from bridge.core.records import (
    RECORD_SEPARATOR,
    RECORD_TYPE,
    DeliveryRecord,
    Source,
    deliveries_stream,
    new_record_id,
    now_rfc3339,
)
from bridge.core.records import Outcome as Outcome_

log = logging.getLogger("bridge.amqp.deliveries")

RECORD_TIMEOUT = 10.0
"""Seconds a record may wait for its confirm before it counts as failed."""
RUN_RECORDS = 128
"""At most this many records in one stream message: a run that reaches it is published at
once (still before the acks of its messages, which leave at the end of the turn)."""
RUN_BYTES = 64 * 1024
"""Likewise, at most about this many bytes of records in one stream message."""
LOG_EVERY = 60.0
"""Seconds between two log lines about failed records (the counter counts each one)."""
_logged = -LOG_EVERY


# Half of what a record is about in one line: the record's fields are written out once.
_Webhook = TypedDict("_Webhook", {"message_id": str, "event": str, "order_id": str | None})  # noqa: UP013


class About(_Webhook):
    """What an operator's record is about: the webhook, the subscriber, the attempt."""

    order_number: str | None
    subscriber: str
    attempt: int


@dataclass(frozen=True)
class Acting:
    """Who is acting on messages (``dlq replay``, a console discard, ``archive replay``):
    where their records go, the record's ``source`` and its ``operator`` (a console user,
    or the command line's OS user); for the change's one audit record
    (:mod:`bridge.core.audit`), where it was made (``via``) and what the operator chose
    (``detail``)."""

    exchange: str
    source: Source
    operator: str | None
    via: Via = Via.CLI
    detail: str | None = None

    def audit(
        self, action: Action, subscriber: str, count: int | None, error: str | None = None
    ) -> AuditRecord:
        """The audit record of this change: ``count`` messages of ``subscriber``."""
        return audit_record(
            action,
            operator=self.operator,
            via=self.via,
            subscriber=subscriber,
            count=count,
            detail=self.detail,
            error=error,
        )

    def record(self, outcome: Outcome_, **about: Unpack[About]) -> DeliveryRecord:
        """The record of this operator's action on one message (no status, answer, error
        or duration: nothing was called)."""
        return DeliveryRecord(
            record_id=new_record_id(),
            outcome=outcome,
            status=None,
            answer=None,
            error=None,
            duration_ms=None,
            at=now_rfc3339(),
            source=self.source,
            operator=self.operator,
            **about,
        )


def send_record(channel: AbstractChannel, exchange: str, record: DeliveryRecord) -> None:
    """Publish ``record`` on ``channel``, a message of its own; its outcome is only counted,
    when it comes (never waited for: see :meth:`Confirms.send_counted`)."""
    body = record.to_body()
    _send(confirms(channel), deliveries_stream(exchange), body, record.record_id, 1)


def _send(on: Confirms, stream: str, body: bytes, message_id: str, records: int) -> None:
    """Publish a message of ``records`` records, its outcome counted for each of them."""
    failed = _counted if records == 1 else functools.partial(_counted, records=records)
    on.send_counted("", stream, RECORD_TYPE, body, message_id, RECORD_TIMEOUT, failed)


class RecordRun:
    """The worker's records gathered on one channel while its acks wait, published as one
    stream message before those acks (see the module docstring); get it with
    :func:`record_run`."""

    def __init__(self, channel: AbstractChannel, exchange: str) -> None:
        self.exchange = exchange
        self.stream = deliveries_stream(exchange)
        self._confirms: Confirms = confirms(channel)
        self._batch: internals.FrameBatch | None = None
        if self._confirms.path == FAST:
            self._batch = internals.frame_batch(channel)
            self._batch.before_last = self.publish
        self._bodies: list[bytes] = []
        self._size = 0
        self._first_id = ""

    def add(self, record_id: str, body: bytes) -> None:
        """Add one record (its id and :meth:`~bridge.core.records.RecordBodies.body`) to the run
        that leaves before this turn's acks."""
        batch = self._batch
        if batch is None:  # the public path: each record its own message, now
            self._send(body, record_id, 1)
            return
        bodies = self._bodies
        if not bodies:
            self._first_id = record_id
            batch.due()
        bodies.append(body)
        self._size += len(body) + 1
        if len(bodies) >= RUN_RECORDS or self._size >= RUN_BYTES:
            self.publish()

    def publish(self) -> None:
        """Publish the run in hand (one message; nothing when empty)."""
        bodies = self._bodies
        if not bodies:
            return
        self._bodies = []
        self._size = 0
        body = bodies[0] if len(bodies) == 1 else RECORD_SEPARATOR.join(bodies)
        self._send(body, self._first_id, len(bodies))

    def _send(self, body: bytes, message_id: str, records: int) -> None:
        # The message id is the first record's: unique, and a run of one is today's message.
        _send(self._confirms, self.stream, body, message_id, records)


def record_run(channel: AbstractChannel, exchange: str) -> RecordRun:
    """The one :class:`RecordRun` of ``channel``, for the records of ``exchange`` (a channel
    writes the records of one exchange; another one publishes the run in hand first)."""
    run = internals.per_channel(channel, "records", lambda: RecordRun(channel, exchange))
    if run.exchange != exchange:
        run.publish()
        run.exchange, run.stream = exchange, deliveries_stream(exchange)
    return run


def add_record(channel: AbstractChannel, exchange: str, record_id: str, body: bytes) -> None:
    """:func:`send_record` of a record given as its id and body
    (:meth:`bridge.core.records.RecordBodies.body`): the worker's, one per attempt, without a
    :class:`~bridge.core.records.DeliveryRecord` made for it, published in this turn's
    :class:`RecordRun`. Its confirm is never waited for, only counted when it comes."""
    record_run(channel, exchange).add(record_id, body)


def _envelope(exchange: str, record: DeliveryRecord) -> Envelope:
    return stream_envelope(exchange, RECORD_TYPE, record.to_body(), record.record_id)


def stream_envelope(exchange: str, record_type: str, body: bytes, record_id: str) -> Envelope:
    """A record (delivery or audit) for ``<exchange>.deliveries``, as an envelope: its
    properties are a record's (contract section 10, with an empty headers table), so a
    record takes the hand-built frames of the fast path."""
    return Envelope(
        event=record_type,
        routing_key=deliveries_stream(exchange),
        body=body,
        message_id=record_id,
        received_at=time.time(),
        headers={},
    )


async def write_record(channel: AbstractChannel, exchange: str, record: DeliveryRecord) -> bool:
    """Publish ``record`` and wait (at most :data:`RECORD_TIMEOUT`) for its outcome, counted
    like :func:`send_record`'s; True if confirmed. For an operator's action, whose record
    must precede the ack that follows it."""
    channel_confirms = confirms(channel)
    deadline = asyncio.get_running_loop().time() + RECORD_TIMEOUT
    sent = channel_confirms.send_envelope(_envelope(exchange, record), "")
    outcome = await channel_confirms.wait(sent, deadline)
    _counted(outcome)
    return outcome is Outcome.CONFIRMED


async def records_settled(channel: AbstractChannel) -> None:
    """Wait (at most :data:`RECORD_TIMEOUT`) for the outcome of the records sent on
    ``channel``, before a command closes it."""
    await confirms(channel).settled(RECORD_TIMEOUT)


def _counted(outcome: Outcome, records: int = 1) -> None:
    """Count the outcome of a message of ``records`` records (each one fails with it)."""
    global _logged
    if outcome is Outcome.CONFIRMED:
        return
    _FAILED[outcome].inc(records)
    now = time.monotonic()
    if now - _logged >= LOG_EVERY:  # a missing stream fails every record: one line a minute
        _logged = now
        log.warning(
            "a delivery record was not stored (%s): the ledger misses that attempt "
            "(bridge_ledger_records_failed_total counts them); run `mintsoft-bridge topology` "
            "if the deliveries stream is missing",
            outcome,
        )


_FAILED = {outcome: metrics.LEDGER_RECORDS_FAILED.labels(outcome.value) for outcome in Outcome}
