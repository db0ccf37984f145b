"""``sync status``: what the state file says, as data (the command prints it). Reads only
the state file: no Mintsoft or broker call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bridge.core.settings import Settings
from bridge.errors import CommandError
from bridge.mintsoft.sync.scan import scan_lag
from bridge.mintsoft.sync.state import SyncState


@dataclass(frozen=True)
class CursorStatus:
    name: str
    value: str
    lag_seconds: float


@dataclass(frozen=True)
class SyncStatus:
    path: str
    cursors: list[CursorStatus]
    orders: dict[str, int]  # by state: pending, enrolled, already, conflict
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
            if kind == "recovered":
                recovered[event] = recovered.get(event, 0) + count
        return SyncStatus(
            path=path,
            cursors=cursors,
            orders=state.order_counts(),
            retrying=state.retrying(),
            recovered=recovered,
            arrived=sum(n for (kind, _), n in events.items() if kind == "arrived"),
            pending_events=sum(n for (kind, _), n in events.items() if kind == "pending"),
            conflicts=state.conflicts(),
            last_pass_at=state.meta("last_pass_at"),
            last_pass=state.meta("last_pass"),
            last_error=state.meta("last_error"),
        )
    finally:
        state.close()
