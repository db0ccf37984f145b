"""The audit record: one per change an operator makes, from the console or the command line
(a pause, a resume, a discard, a dead-letter replay, an archive replay): when, who, what, to
which subscriber, how many (contract section 9, ``/audit``).

Audit records travel in the stream ``<exchange>.deliveries`` beside the delivery records
(:mod:`bridge.core.records`), told apart by their AMQP ``type`` (:data:`AUDIT_TYPE`) and
their body's ``"kind": "audit"``; the ledger's indexer writes them to its ``audit`` table.
This module is the one definition of their shape. Pure data and functions: no I/O.
:meth:`AuditRecord.from_body` raises :class:`~bridge.core.records.RecordError` for a body
that is not an audit record of this version (the indexer counts and skips it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import orjson

from bridge.core.records import (
    RecordError,
    cut,
    json_object,
    new_record_id,
    now_rfc3339,
    required_text,
)

AUDIT_TYPE: Final = "audit-record"
"""The AMQP ``type`` property of an audit record's message."""
AUDIT_VERSION: Final = 1
DETAIL_LIMIT: Final = 500
"""At most this many bytes of detail (the window and events of a replay, an error)."""
SHARED_OPERATOR: Final = "console"
"""Who a change made with the shared ``BRIDGE_CONSOLE_PASSWORD`` is recorded as."""
UNKNOWN_CLI_USER: Final = "cli"
"""Who a command-line change is recorded as when the OS user has no name."""


class Action(StrEnum):
    """What an operator did."""

    PAUSE = "pause"
    RESUME = "resume"
    DISCARD = "discard"
    """Dead letters deleted from a subscriber's DLQ."""
    DLQ_REPLAY = "dlq-replay"
    """Dead letters moved back to the subscriber's queue."""
    ARCHIVE_REPLAY = "archive-replay"
    """Archived webhooks copied into the subscriber's queue."""


class Via(StrEnum):
    """Where the change was made."""

    CONSOLE = "console"
    CLI = "cli"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One change. ``count`` is how many messages it touched (``None`` for a pause or a
    resume); ``detail`` what the operator chose (a replay's window and events, "selected",
    "all matching a filter") and, when the change stopped part-way, why."""

    audit_id: str
    at: str
    operator: str
    via: Via
    action: Action
    subscriber: str
    count: int | None
    detail: str | None

    def to_body(self) -> bytes:
        return orjson.dumps(
            {
                "v": AUDIT_VERSION,
                "kind": "audit",
                "audit_id": self.audit_id,
                "at": self.at,
                "operator": self.operator,
                "via": str(self.via),
                "action": str(self.action),
                "subscriber": self.subscriber,
                "count": self.count,
                "detail": cut(self.detail, DETAIL_LIMIT),
            }
        )

    @classmethod
    def from_body(cls, body: bytes) -> AuditRecord:
        """Parse an audit record body; :class:`RecordError` names what is wrong with it."""
        data = json_object(body)
        if data.get("kind") != "audit":
            raise RecordError("not an audit record")
        if data.get("v") != AUDIT_VERSION:
            raise RecordError(f"unknown audit record version {data.get('v')!r}")
        count = data.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
            raise RecordError("count must be an integer or null")
        detail = data.get("detail")
        if detail is not None and not isinstance(detail, str):
            raise RecordError("detail must be a string or null")
        try:
            return cls(
                audit_id=required_text(data, "audit_id"),
                at=required_text(data, "at"),
                operator=required_text(data, "operator"),
                via=Via(required_text(data, "via")),
                action=Action(required_text(data, "action")),
                subscriber=required_text(data, "subscriber"),
                count=count,
                detail=detail,
            )
        except ValueError as exc:
            raise RecordError(str(exc)) from None


def audit_record(
    action: Action,
    *,
    operator: str | None,
    via: Via,
    subscriber: str,
    count: int | None = None,
    detail: str | None = None,
    error: str | None = None,
) -> AuditRecord:
    """A record of ``action`` made now. Without a name the operator is
    :data:`SHARED_OPERATOR` (the console's shared password) or :data:`UNKNOWN_CLI_USER`;
    ``error`` (the change stopped part-way) joins the detail."""
    parts = [p for p in (detail, f"stopped: {error}" if error else None) if p]
    return AuditRecord(
        audit_id=new_record_id(),
        at=now_rfc3339(),
        operator=operator or (SHARED_OPERATOR if via is Via.CONSOLE else UNKNOWN_CLI_USER),
        via=via,
        action=action,
        subscriber=subscriber,
        count=count,
        detail="; ".join(parts) or None,
    )
