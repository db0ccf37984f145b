"""Writing delivery records (:mod:`bridge.core.records`) to ``<exchange>.deliveries``.

A record goes through the one confirmed publish (:mod:`bridge.amqp.publisher`) on the
channel it is given (the worker's: the channel of the message it describes), to the default
exchange with the stream's name as routing key. :func:`send_record` never waits for the
confirm and never raises: a record the broker returns (the stream is missing), nacks (full,
or an alarm), does not confirm within :data:`RECORD_TIMEOUT` seconds, or loses with its
channel is counted in ``bridge_ledger_records_failed_total{reason}`` and logged, and
whatever the record describes goes on regardless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiormq.abc import AbstractChannel

from bridge.amqp.publisher import Outcome, confirms
from bridge.core import metrics
from bridge.core.audit import Action, AuditRecord, Via, audit_record
from bridge.core.contract import Envelope
from bridge.core.records import (
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
LOG_EVERY = 60.0
"""Seconds between two log lines about failed records (the counter counts each one)."""
_logged = -LOG_EVERY


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

    def record(
        self,
        outcome: Outcome_,
        *,
        message_id: str,
        subscriber: str,
        event: str,
        order_id: str | None,
        order_number: str | None,
        attempt: int,
    ) -> DeliveryRecord:
        """The record of this operator's action on one message (no status, answer, error
        or duration: nothing was called)."""
        return DeliveryRecord(
            record_id=new_record_id(),
            message_id=message_id,
            subscriber=subscriber,
            event=event,
            order_id=order_id,
            order_number=order_number,
            attempt=attempt,
            outcome=outcome,
            status=None,
            answer=None,
            error=None,
            duration_ms=None,
            at=now_rfc3339(),
            source=self.source,
            operator=self.operator,
        )


def send_record(channel: AbstractChannel, exchange: str, record: DeliveryRecord) -> None:
    """Publish ``record`` on ``channel``; its outcome is only counted, when it comes."""
    send_record_body(channel, exchange, record.record_id, record.to_body())


def send_record_body(channel: AbstractChannel, exchange: str, record_id: str, body: bytes) -> None:
    """:func:`send_record` of a record given as its id and body
    (:func:`bridge.core.records.record_body`): the worker's, one per attempt, without a
    :class:`~bridge.core.records.DeliveryRecord` made for it. Pipelined: its confirm is
    never waited for, only counted when it comes (:meth:`Confirms.send_counted`)."""
    confirms(channel).send_counted(
        "", deliveries_stream(exchange), RECORD_TYPE, body, record_id, RECORD_TIMEOUT, _counted
    )


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


def _counted(outcome: Outcome) -> None:
    global _logged
    if outcome is Outcome.CONFIRMED:
        return
    _FAILED[outcome].inc()
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
