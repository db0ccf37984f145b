"""``sync status`` and the console's sync figures: what the state file says, as data (the
command prints it, the console shows it). Reads only the state file: no Mintsoft or broker
call. :func:`sync_overview` opens it read-only and never fails: a file it cannot read is
reported as not there."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bridge.core.settings import Settings
from bridge.errors import CommandError
from bridge.mintsoft.sync.scan import scan_lag
from bridge.mintsoft.sync.state import EventState, OrderState, SyncState, read_only


@dataclass(frozen=True)
class CursorStatus:
    name: str
    value: str
    lag_seconds: float


@dataclass(frozen=True)
class SyncStatus:
    path: str
    cursors: list[CursorStatus]
    orders: dict[OrderState, int]
    retrying: int  # pending orders whose last try failed
    recovered: dict[str, int]  # by event
    arrived: int
    pending_events: int
    conflicts: list[tuple[int, str]]
    last_pass_at: str | None
    last_pass: str | None
    last_error: str | None


def sync_status(settings: Settings) -> SyncStatus:
    path = settings.sync_state_path
    if not Path(path).exists():
        raise CommandError(
            f"no sync state at {path!r}: sync has not run with this BRIDGE_SYNC_STATE_PATH"
        )
    state = SyncState(path)
    try:
        now = datetime.now(UTC)
        cursors = [
            CursorStatus(name, value, scan_lag(state, name, now))
            for name, value in sorted(state.cursors().items())
        ]
        events = state.event_counts()
        recovered: dict[str, int] = {}
        for (kind, event), count in events.items():
            if kind == EventState.RECOVERED:
                recovered[event] = recovered.get(event, 0) + count
        return SyncStatus(
            path=path,
            cursors=cursors,
            orders=state.order_counts(),
            retrying=state.retrying(),
            recovered=recovered,
            arrived=sum(n for (kind, _), n in events.items() if kind == EventState.ARRIVED),
            pending_events=sum(n for (kind, _), n in events.items() if kind == EventState.PENDING),
            conflicts=state.conflicts(),
            last_pass_at=state.meta("last_pass_at"),
            last_pass=state.meta("last_pass"),
            last_error=state.meta("last_error"),
        )
    finally:
        state.close()


@dataclass(frozen=True)
class SyncOverview:
    """The console's view of a sync: how long ago it last wrote its state, how many
    webhooks it recovered, and its cursors and last pass / last error (name -> value)."""

    path: str
    seconds_since_write: float
    recovered: int | None
    facts: dict[str, str]


def sync_overview(path: str | None) -> SyncOverview | None:
    """What the state file at ``path`` says, or ``None`` when there is none (sync does not
    run here). Read-only: the file is never created, migrated or written."""
    if not path or not os.path.exists(path):
        return None
    lag = max(0.0, time.time() - os.path.getmtime(path))
    facts: dict[str, str] = {}
    recovered: int | None = None
    with contextlib.suppress(sqlite3.Error):
        db = read_only(path)
        try:
            # Each table on its own: a file of an older or a newer sync may lack one.
            with contextlib.suppress(sqlite3.Error):
                query = "SELECT COUNT(*) FROM events WHERE state = ?"
                recovered = int(db.execute(query, (EventState.RECOVERED,)).fetchone()[0])
            for query in (
                "SELECT name, value FROM cursors LIMIT 20",
                "SELECT key, value FROM meta LIMIT 20",
            ):
                with contextlib.suppress(sqlite3.Error):
                    facts.update((str(name), str(value)) for name, value in db.execute(query))
        finally:
            db.close()
    return SyncOverview(path, lag, recovered, facts)
