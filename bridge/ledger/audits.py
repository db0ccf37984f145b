"""What the console's ``/audit`` asks the ledger: operators' changes, newest first, a page at
a time; and what ``/replay`` asks: the latest changes of one action (its archive replays, from
the console or the command line), with the time before which every audit record is in.
Read-only and synchronous (the console runs it in a thread).

Pages are keyset pages: a page after the first starts below the row its link names (by time,
then row id), so rows that arrive meanwhile never shift an older page. Raises
:class:`~bridge.errors.CommandError` when the ledger's schema predates the ``audit`` table
(its ``ledger`` process has not been restarted on this version), and SQLAlchemy's errors
otherwise (the caller turns them into one line).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, Select, and_, func, or_, select

from bridge.ledger.reading import read_row, require_schema
from bridge.ledger.schema import audit
from bridge.ledger.store import current_at

AUDIT_SINCE_VERSION = 2
PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    operator: str
    via: str
    action: str
    subscriber: str
    count: int | None
    detail: str | None


@dataclass(frozen=True)
class AuditPage:
    entries: tuple[AuditEntry, ...]
    total: int
    """Every change the ledger holds (within the archive's retention)."""
    older: int | None
    """The id to start the next (older) page below; ``None``: this is the oldest page."""


def audit_page(engine: Engine, before: int | None = None, size: int = PAGE_SIZE) -> AuditPage:
    """Up to ``size`` changes, newest first; with ``before``, those older than row
    ``before`` (a row retention removed meanwhile: from the newest again)."""
    with engine.connect() as connection:
        require_schema(connection, AUDIT_SINCE_VERSION, "the audit table")
        total = int(connection.execute(select(func.count()).select_from(audit)).scalar() or 0)
        query = _newest_first(size + 1)
        if before is not None:
            anchor = connection.execute(
                select(audit.c.at).where(audit.c.id == before)
            ).scalar_one_or_none()
            if anchor is not None:
                query = query.where(
                    or_(audit.c.at < anchor, and_(audit.c.at == anchor, audit.c.id < before))
                )
        rows = connection.execute(query).all()
    entries = tuple(_entry(row) for row in rows[:size])
    older = entries[-1].id if len(rows) > size else None
    return AuditPage(entries, total, older)


@dataclass(frozen=True)
class Changes:
    """The latest changes of one action, newest first."""

    entries: tuple[AuditEntry, ...]
    current_at: datetime | None
    """Every audit record appended to the deliveries stream before this is among them (the
    indexer's mark; ``None``: it never indexed that stream)."""


def latest_changes(engine: Engine, action: str, deliveries: str, size: int = PAGE_SIZE) -> Changes:
    """Up to ``size`` changes ``action`` (an :class:`~bridge.core.audit.Action`), newest
    first, and the indexer's mark on ``deliveries`` (the stream the records come from)."""
    with engine.connect() as connection:
        require_schema(connection, AUDIT_SINCE_VERSION, "the audit table")
        rows = connection.execute(_newest_first(size).where(audit.c.action == action)).all()
        mark = current_at(connection, deliveries)
    return Changes(tuple(_entry(row) for row in rows), mark)


def _newest_first(limit: int) -> Select[Any]:
    return select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)


def _entry(row: Row[Any]) -> AuditEntry:
    return read_row(AuditEntry, row, id=int(row.id))
