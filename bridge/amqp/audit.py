"""Writing audit records (:mod:`bridge.core.audit`) to ``<exchange>.deliveries``, where the
ledger's indexer finds them.

A record goes through the one confirmed publish (:mod:`bridge.amqp.publisher`) to the default
exchange with the stream's name as routing key, typed :data:`~bridge.core.audit.AUDIT_TYPE`.
Guarantees: none of these functions raises, and each waits at most :data:`AUDIT_TIMEOUT`
seconds: the change a record describes is already made, and a record the broker returns
(the stream is missing), nacks, does not confirm, or that cannot be sent at all (no channel,
no broker) must not undo or fail it. Such a record is counted in
``bridge_ledger_records_failed_total{reason}`` and logged (a WARNING naming the action,
subscriber and operator: ``/audit`` will miss it).
"""

from __future__ import annotations

import asyncio
import logging

from aiormq.abc import AbstractChannel, AbstractConnection

from bridge.amqp.connection import close_quietly
from bridge.amqp.deliveries import stream_envelope
from bridge.amqp.publisher import Outcome, confirms
from bridge.core import metrics
from bridge.core.audit import AUDIT_TYPE, AuditRecord
from bridge.core.contract import Envelope

log = logging.getLogger("bridge.amqp.audit")

AUDIT_TIMEOUT = 5.0
"""Seconds an audit record may wait for its confirm before it counts as failed."""
NO_CHANNEL = "channel_closed"
"""The failure reason counted when no channel could be had to send the record on."""


def _envelope(exchange: str, record: AuditRecord) -> Envelope:
    return stream_envelope(exchange, AUDIT_TYPE, record.to_body(), record.audit_id)


def _failed(record: AuditRecord, reason: str, why: str = "") -> bool:
    metrics.LEDGER_RECORDS_FAILED.labels(reason).inc()
    log.warning(
        "the audit record of %s of %s by %s was not stored (%s): /audit will miss it "
        "(bridge_ledger_records_failed_total counts them); run `mintsoft-bridge topology` if "
        "the deliveries stream is missing",
        record.action,
        record.subscriber,
        record.operator,
        f"{reason}: {why}" if why else reason,
    )
    return False


async def write_audit(channel: AbstractChannel, exchange: str, record: AuditRecord) -> bool:
    """Publish ``record`` on ``channel`` (in confirm mode) and wait for its confirm; True if
    confirmed. Never raises (see the module's guarantees)."""
    try:
        channel_confirms = confirms(channel)
        deadline = asyncio.get_running_loop().time() + AUDIT_TIMEOUT
        sent = channel_confirms.send_envelope(_envelope(exchange, record), "")
        outcome = await channel_confirms.wait(sent, deadline)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a closed channel, a connection gone: never the change's fault
        return _failed(record, NO_CHANNEL, type(exc).__name__)
    if outcome is not Outcome.CONFIRMED:
        return _failed(record, outcome.value)
    return True


async def audit_on(connection: AbstractConnection, exchange: str, record: AuditRecord) -> bool:
    """Publish ``record`` on a channel of its own on ``connection``; True if confirmed."""
    try:
        async with asyncio.timeout(AUDIT_TIMEOUT):
            channel = await connection.channel(publisher_confirms=True)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return _failed(record, NO_CHANNEL, type(exc).__name__)
    try:
        return await write_audit(channel, exchange, record)
    finally:
        await close_quietly(channel)
