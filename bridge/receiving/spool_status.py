"""``spool status``: depth, bytes and oldest age of a spool file, read while ``serve`` may
be writing it (WAL readers never block the writer). An unreadable file is a
:class:`~bridge.errors.CommandError` naming the setting to check."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import CommandError
from bridge.receiving.spool import OLDEST, STATS, connect


@dataclass(frozen=True)
class SpoolStatus:
    depth: int
    bytes: int
    oldest_age_seconds: float


def read_status(path: str) -> SpoolStatus:
    """Depth, bytes and oldest age of the spool file at ``path``, read while ``serve`` may
    be writing it (WAL readers never block the writer)."""
    if not Path(path).exists():
        return SpoolStatus(0, 0, 0.0)
    try:
        connection = connect(path, create=False)
        try:
            depth, size = connection.execute(STATS).fetchone()
            oldest = connection.execute(OLDEST).fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise CommandError(
            f"cannot read the spool {path!r} ({exc}): check BRIDGE_SPOOL_PATH points at the "
            "bridge's spool file"
        ) from None
    age = max(time.time() - oldest[0], 0.0) if oldest else 0.0
    return SpoolStatus(int(depth), int(size), age)
