"""Where the console reads what it did not make: the archive library (``bridge.archive``,
see its ``find``, ``replay`` and ``archive_status``) and the sync's state file, read-only.

Both are optional: a build without the archive package, an exchange without an archive
stream, or a machine where ``sync`` does not run makes the pages say so, never fail.
The sync's state is opened read-only (``mode=ro``); the console never writes it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.amqp.topology import ArchiveRetention
from bridge.errors import CommandError


@dataclass(frozen=True)
class ArchiveSummary:
    available: bool  # the archive code is part of this build
    enabled: bool  # the stream exists
    messages: int = 0
    oldest: Any = None
    newest: Any = None
    max_age: str | None = None
    max_bytes: int | None = None
    error: str | None = None


async def archive_summary(
    amqp_urls: Sequence[str], exchange: str, retention: ArchiveRetention | None = None
) -> ArchiveSummary:
    try:
        from bridge.archive.status import archive_status
    except ImportError:
        return ArchiveSummary(available=False, enabled=False)
    try:
        status = await archive_status(amqp_urls, exchange, retention)
    except CommandError as exc:
        return ArchiveSummary(available=True, enabled=False, error=str(exc))
    return ArchiveSummary(
        available=True,
        enabled=status.enabled,
        messages=status.messages,
        oldest=status.oldest,
        newest=status.newest,
        max_age=status.max_age,
        max_bytes=status.max_bytes,
    )


def archive_available() -> bool:
    try:
        import bridge.archive.reader  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class SyncSummary:
    path: str
    seconds_since_write: float
    recovered: int | None
    facts: dict[str, str]


def sync_summary(path: str | None) -> SyncSummary | None:
    """What the sync's state file says, or None when there is none (sync not run here).

    Read-only, without the sync's code: its ``cursors`` and ``meta`` tables (name / value
    rows: cursor positions, last pass and last error) and the ``events`` it recovered. Lag is
    how long ago sync last wrote the file. A table that is not there is skipped.
    """
    if not path or not os.path.exists(path):
        return None
    lag = max(0.0, time.time() - os.path.getmtime(path))
    facts: dict[str, str] = {}
    recovered: int | None = None
    with contextlib.suppress(sqlite3.Error):
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "events" in tables:
                query = "SELECT COUNT(*) FROM events WHERE state = 'recovered'"
                recovered = int(connection.execute(query).fetchone()[0])
            for table in ("cursors", "meta"):
                if table in tables:
                    for row in connection.execute(f'SELECT * FROM "{table}" LIMIT 20'):
                        if len(row) >= 2:
                            facts[str(row[0])] = str(row[1])
        finally:
            connection.close()
    return SyncSummary(path, lag, recovered, facts)
