"""What the ledger's readers (audit pages, subscriber figures, traces) share: a schema new
enough for the question asked, and a result row read as one of their dataclasses.

A schema older than the question raises :class:`~bridge.errors.CommandError` (one line
naming the fix: restart the ledger, which upgrades it); a row lacking a field raises
``KeyError`` (a programming error: the query and the dataclass disagree).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection

from bridge.errors import CommandError
from bridge.ledger.migrations import current_version
from bridge.ledger.rows import utc

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")


def require_schema(connection: Connection, since: int, holding: str) -> None:
    """Raise :class:`CommandError` unless the ledger's schema is at least version ``since``;
    ``holding`` names what that version added ("the audit table")."""
    version = current_version(connection) or 0
    if version < since:
        raise CommandError(
            f"the ledger's schema is version {version}, older than {holding}: restart "
            "`mintsoft-bridge ledger` with this version (it upgrades the schema on start, "
            "keeping every row)"
        )


def read_row(cls: type[D], row: Any, **given: Any) -> D:
    """A ``cls`` whose fields are the row's columns of the same name (times as aware UTC:
    SQLite hands them back without their zone), but for those ``given``."""
    mapping = row._mapping
    values = {f.name: mapping[f.name] for f in fields(cls) if f.init and f.name not in given}
    for name, value in values.items():
        if isinstance(value, datetime):
            values[name] = utc(value)
    return cls(**values, **given)
