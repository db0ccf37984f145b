"""``spool status``: depth, bytes and oldest age of a spool file, read while ``serve`` may
be writing it (WAL readers never block the writer). A missing file is a
:class:`~bridge.core.settings.SettingsError` (never "depth 0": someone looking for stranded
webhooks must not be told there are none), an unreadable one a
:class:`~bridge.errors.CommandError`; both name the setting to check."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.core.settings import SettingsError
from bridge.errors import CommandError
from bridge.receiving.spool import OLDEST, STATS, connect


@dataclass(frozen=True)
class SpoolStatus:
    depth: int
    bytes: int
    oldest_age_seconds: float


def read_status(path: str, named: str = "BRIDGE_SPOOL_PATH") -> SpoolStatus:
    """Depth, bytes and oldest age of the spool file at ``path`` (given by ``named``, the
    setting or flag an error tells to fix), read while ``serve`` may be writing it (WAL
    readers never block the writer)."""
    if not Path(path).exists():
        raise SettingsError(
            f"no spool file at {path!r} ({Path(path).absolute()}): point {named} at the "
            "spool serve uses (serve creates it on start; a relative path is relative to "
            "the directory serve runs in)"
        )
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
