"""What the console reads besides the broker: the sync's figures, asked of the sync module
(which reads its state file read-only), and nothing when it is absent."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import bridge.console
from bridge.core.durations import format_duration
from bridge.mintsoft.sync.status import sync_overview


def test_no_sync_state_means_no_sync_panel(tmp_path: Path) -> None:
    assert sync_overview(None) is None
    assert sync_overview(str(tmp_path / "missing.sqlite3")) is None


def test_sync_state_is_read_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "sync.sqlite3"
    with sqlite3.connect(path) as db:
        # The tables of bridge/mintsoft/sync/state.py that the console reads.
        db.execute("CREATE TABLE cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE events (message_id TEXT PRIMARY KEY, state TEXT NOT NULL)")
        db.executemany(
            "INSERT INTO events VALUES (?, ?)",
            [("a", "recovered"), ("b", "recovered"), ("c", "arrived"), ("d", "recovered")],
        )
        db.execute("INSERT INTO cursors VALUES ('orders', '2026-11-30T10:00:00Z')")
        db.execute("INSERT INTO meta VALUES ('last_error', 'Mintsoft said 503')")
    db.close()
    os.utime(path, (1, 1))
    before = path.read_bytes()
    summary = sync_overview(str(path))
    assert summary is not None
    assert summary.recovered == 3
    assert summary.facts == {"orders": "2026-11-30T10:00:00Z", "last_error": "Mintsoft said 503"}
    assert summary.seconds_since_write > 3600
    assert path.read_bytes() == before and path.stat().st_mtime == 1


def test_delay_labels() -> None:
    assert [format_duration(ms / 1000) for ms in (500, 5000, 60_000, 3_600_000, 90_000)] == [
        "500ms",
        "5s",
        "1m",
        "1h",
        "90s",
    ]


def test_archive_span() -> None:
    from datetime import UTC, datetime, timedelta

    from bridge.console.views import span

    start = datetime(2026, 11, 30, tzinfo=UTC)
    assert span(None, start) == "-"
    assert span(start, start + timedelta(seconds=40)) == "40s"
    assert span(start, start + timedelta(hours=2, minutes=5)) == "2h 5m"
    assert span(start, start + timedelta(days=3, hours=4)) == "3d 4h"


def test_the_vendored_htmx_is_the_pinned_one_with_its_licence() -> None:
    import hashlib
    from importlib.resources import files

    import bridge.console

    static = files("bridge.console") / "static"
    script = (static / "htmx.min.js").read_bytes()
    pinned = (bridge.console.__doc__ or "").split("sha256 ")[1].split()[0].rstrip(".")
    assert hashlib.sha256(script).hexdigest() == pinned
    assert b'version:"2.0.11"' in script
    assert "Zero-Clause BSD" in (static / "htmx.LICENSE").read_text()


def test_the_console_reads_no_sync_table_itself() -> None:
    # The sync's tables are the sync module's to read (sync_overview): no SQL in the console.
    console = Path(bridge.console.__file__).parent
    readers = [p.name for p in sorted(console.glob("*.py")) if "sqlite3" in p.read_text()]
    assert readers == []
