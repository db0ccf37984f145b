"""What the console's ``/audit`` asks the ledger: operators' changes, newest first, a page at
a time. Read-only and synchronous (the console runs it in a thread).

Pages are keyset pages: a page after the first starts below the row its link names (by time,
then row id), so rows that arrive meanwhile never shift an older page. Raises
:class:`~bridge.errors.CommandError` when the ledger's schema predates the ``audit`` table
(its ``ledger`` process has not been restarted on this version), and SQLAlchemy's errors
otherwise (the caller turns them into one line).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, func, or_, select

from bridge.ledger.reading import read_row, require_schema
from bridge.ledger.schema import audit

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
        query = select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(size + 1)
        if before is not None:
            anchor = connection.execute(
                select(audit.c.at).where(audit.c.id == before)
            ).scalar_one_or_none()
            if anchor is not None:
                query = query.where(
                    or_(audit.c.at < anchor, and_(audit.c.at == anchor, audit.c.id < before))
                )
        rows = connection.execute(query).all()
    entries = tuple(read_row(AuditEntry, row, id=int(row.id)) for row in rows[:size])
    older = entries[-1].id if len(rows) > size else None
    return AuditPage(entries, total, older)
