"""The sync's state file: states are an enum held by a CHECK on each table, and a file
written before the checks opens with every row kept (no Mintsoft, no broker)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.mintsoft.sync.state import SCHEMA_VERSION, EventState, OrderState, SyncState
from bridge.mintsoft.sync.status import sync_overview

# The schema as sync wrote it before the CHECKs (user_version 0).
SCHEMA_V0 = """
CREATE TABLE cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orders (
    order_id INTEGER PRIMARY KEY, client_id INTEGER, warehouse_id INTEGER,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, put_at REAL,
    next_try REAL NOT NULL DEFAULT 0, last_error TEXT, detail TEXT,
    seen_at REAL NOT NULL, done_at REAL
);
CREATE INDEX orders_state ON orders (state, next_try);
CREATE TABLE events (
    message_id TEXT PRIMARY KEY, event TEXT NOT NULL, order_id INTEGER NOT NULL,
    identity TEXT NOT NULL, happened_at REAL NOT NULL, body BLOB, state TEXT NOT NULL,
    done_at REAL
);
CREATE INDEX events_state ON events (state, happened_at);
"""


def _old_file(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_V0)
        db.executemany(
            "INSERT INTO orders (order_id, state, seen_at, detail) VALUES (?, ?, 1, ?)",
            [(1, "pending", None), (2, "enrolled", None), (3, "conflict", "erp.example")],
        )
        db.executemany(
            "INSERT INTO events (message_id, event, order_id, identity, happened_at, state)"
            " VALUES (?, 'despatched', 2, 'x', 1, ?)",
            [("m1", "pending"), ("m2", "recovered"), ("m3", "skipped")],
        )
        db.execute("INSERT INTO cursors VALUES ('orders', '2026-11-30T10:00:00')")
    db.close()


def test_an_old_state_file_opens_with_its_rows_and_gains_the_checks(tmp_path: Path) -> None:
    path = tmp_path / "sync.sqlite3"
    _old_file(path)
    state = SyncState(str(path))
    try:
        assert state.order_counts() == {"pending": 1, "enrolled": 1, "conflict": 1}
        assert state.conflicts() == [(3, "erp.example")]
        assert state.cursor("orders") == "2026-11-30T10:00:00"
        counts = state.event_counts()
        assert counts == {("pending", "despatched"): 1, ("recovered", "despatched"): 1,
                          ("skipped", "despatched"): 1}  # fmt: skip
        assert all(isinstance(kind, EventState) for kind, _ in counts)
        assert [e.message_id for e in state.events_due(10)] == ["m1"]
        assert state.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in state.db.execute("SELECT name FROM sqlite_master")}
        assert {"orders_state", "events_state"} <= indexes
        assert not {"orders_v0", "events_v0"} & indexes
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            state.order_done(1, "bogus")  # type: ignore[arg-type]
    finally:
        state.close()
    # Opened again: nothing to migrate, nothing lost.
    again = SyncState(str(path))
    try:
        assert sum(again.order_counts().values()) == 3
    finally:
        again.close()


def test_a_new_state_file_refuses_a_state_outside_the_enum(tmp_path: Path) -> None:
    state = SyncState(str(tmp_path / "sync.sqlite3"))
    try:
        state.add_orders([(7, None, None)], [])
        assert state.order_state(7) is OrderState.PENDING
        state.order_done(7, OrderState.ALREADY)
        assert state.order_state(7) == "already"  # a StrEnum is its text
        for sql in (
            "UPDATE orders SET state = 'done' WHERE order_id = 7",
            "INSERT INTO events (message_id, event, order_id, identity, happened_at, state)"
            " VALUES ('m', 'despatched', 7, 'x', 1, 'lost')",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                state.db.execute(sql)
    finally:
        state.close()


def test_the_console_overview_reads_an_old_file_without_migrating_it(tmp_path: Path) -> None:
    path = tmp_path / "sync.sqlite3"
    _old_file(path)
    before = path.read_bytes()
    overview = sync_overview(str(path))
    assert overview is not None and overview.recovered == 1
    assert overview.facts == {"orders": "2026-11-30T10:00:00"}
    assert path.read_bytes() == before
