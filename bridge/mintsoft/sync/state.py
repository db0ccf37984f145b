"""The sync's record, in SQLite at ``BRIDGE_SYNC_STATE_PATH``: cursors, every order seen and
what enrolment did with it, every event that needs (or needed) a webhook, and the last error.

Crash-safe: every change is one transaction (WAL, ``synchronous=FULL``), and each step
records its outcome only after it happened (an enrolment after Mintsoft's answer, a recovery
after the broker's confirm), so a process killed at any point repeats at most the step it
was in. The file is created 0600 (it holds order ids and tracking bodies) in a directory
created 0700. A file that cannot be opened raises :class:`CommandError`.

States are :class:`OrderState` and :class:`EventState`, held to them by a ``CHECK`` on each
table. A file written before the checks (``user_version`` 0) is rebuilt with them on open,
every row kept, in one transaction. :func:`read_only` opens a file without writing it (the
console's view).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bridge.errors import CommandError


class OrderState(StrEnum):
    """What enrolment did with an order."""

    PENDING = "pending"  # seen, its connect action not yet set
    ENROLLED = "enrolled"  # the bridge's URLs set by this sync
    ALREADY = "already"  # the bridge's URLs were there already
    CONFLICT = "conflict"  # another integration's URLs are there (detail says where)


class EventState(StrEnum):
    """What became of an event that needs a webhook."""

    PENDING = "pending"  # not yet checked against the archive
    ARRIVED = "arrived"  # the archive has its webhook
    RECOVERED = "recovered"  # published by sync, confirmed by the broker
    SKIPPED = "skipped"  # out of the reconcile scope (BRIDGE_SYNC_RECONCILE)


def _one_of(states: type[StrEnum]) -> str:
    return "CHECK (state IN (" + ", ".join(f"'{s.value}'" for s in states) + "))"


SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a file with the CHECKs (0: written before them)."""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_id INTEGER PRIMARY KEY,
    client_id INTEGER,
    warehouse_id INTEGER,
    state TEXT NOT NULL {_one_of(OrderState)},
    attempts INTEGER NOT NULL DEFAULT 0,
    put_at REAL,                    -- set before a PUT is sent
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    detail TEXT,                    -- for a conflict: where its action points
    seen_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS orders_state ON orders (state, next_try);
CREATE TABLE IF NOT EXISTS events (
    message_id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    order_id INTEGER NOT NULL,
    identity TEXT NOT NULL,
    happened_at REAL NOT NULL,      -- Unix time (UTC)
    body BLOB,                      -- the webhook body when the API cannot fetch it later
    state TEXT NOT NULL {_one_of(EventState)},
    done_at REAL
);
CREATE INDEX IF NOT EXISTS events_state ON events (state, happened_at);
"""

ENROLLED_STATES = (OrderState.ENROLLED, OrderState.ALREADY)
"""Orders whose connect action holds the bridge's URLs: what ``enrolled`` reconciles."""


def _migrate(db: sqlite3.Connection) -> None:
    """Create the tables, or rebuild those of a file from before the CHECKs with them (rows
    kept, one transaction: a file is either migrated whole or left as it was)."""
    statements = [statement for statement in SCHEMA.split(";") if statement.strip()]
    if int(db.execute("PRAGMA user_version").fetchone()[0]) >= SCHEMA_VERSION:
        for statement in statements:  # IF NOT EXISTS: writes nothing when all are there
            db.execute(statement)
        return
    tables = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master")}
    old = [table for table in ("orders", "events") if table in tables]
    db.execute("BEGIN IMMEDIATE")
    try:
        for table in old:
            db.execute(f"DROP INDEX IF EXISTS {table}_state")
            db.execute(f"ALTER TABLE {table} RENAME TO {table}_v0")
        for statement in statements:
            db.execute(statement)
        for table in old:
            columns = ", ".join(str(r[1]) for r in db.execute(f"PRAGMA table_info({table}_v0)"))
            db.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_v0")
            db.execute(f"DROP TABLE {table}_v0")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def read_only(path: str) -> sqlite3.Connection:
    """The state file opened for reading only (never created, migrated or written);
    :class:`sqlite3.Error` when it cannot be."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)


@dataclass(frozen=True)
class PendingOrder:
    order_id: int
    state: OrderState
    put_at: float | None
    attempts: int


@dataclass(frozen=True)
class PendingEvent:
    message_id: str
    event: str
    order_id: int
    identity: str
    happened_at: float
    body: bytes | None


class SyncState:
    """Open with ``SyncState(path)``; every method commits before it returns."""

    def __init__(self, path: str) -> None:
        self.path = path
        target = Path(path)
        try:
            if not target.parent.exists():
                target.parent.mkdir(mode=0o700, parents=True)
            fd = os.open(target, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            os.chmod(target, 0o600)
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=5000")
            _migrate(self.db)
        except (OSError, sqlite3.Error) as exc:
            raise CommandError(
                f"cannot open the sync state {path!r} ({exc}): set BRIDGE_SYNC_STATE_PATH to "
                "a writable file (one sync process per file)"
            ) from None

    def close(self) -> None:
        self.db.close()

    # cursors and meta
    def cursor(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def cursors(self) -> dict[str, str]:
        return {str(n): str(v) for n, v in self.db.execute("SELECT name, value FROM cursors")}

    def set_cursor(self, name: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = ?",
            (name, value, value),
        )

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
            (key, value, value),
        )

    # orders
    def add_orders(
        self,
        orders: Iterable[tuple[int, int | None, int | None]],
        events: Iterable[PendingEvent],
    ) -> int:
        """Record one page: new orders as ``pending`` and the events it shows, in one
        transaction; returns how many orders were new."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO orders (order_id, client_id, warehouse_id, state, seen_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(o, c, w, OrderState.PENDING, now) for o, c, w in orders],
            )
            added = self.db.total_changes - before
            self._add_events(events)
        return added

    def add_events(self, events: Iterable[PendingEvent]) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._add_events(events)

    def _add_events(self, events: Iterable[PendingEvent]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO events (message_id, event, order_id, identity, happened_at,"
            " body, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.message_id,
                    e.event,
                    e.order_id,
                    e.identity,
                    e.happened_at,
                    e.body,
                    EventState.PENDING,
                )
                for e in events
            ],
        )

    def orders_to_enrol(self, now: float, take_over: bool = False) -> list[PendingOrder]:
        states = (OrderState.PENDING, OrderState.CONFLICT) if take_over else (OrderState.PENDING,)
        marks = ",".join("?" * len(states))
        rows = self.db.execute(
            f"SELECT order_id, state, put_at, attempts FROM orders WHERE state IN ({marks})"
            " AND next_try <= ? ORDER BY order_id",
            (*states, now),
        ).fetchall()
        return [PendingOrder(int(o), OrderState(s), p, int(a)) for o, s, p, a in rows]

    def putting(self, order_id: int) -> None:
        """Noted before the PUT: after a crash, finding the bridge's URLs means we did it."""
        self.db.execute("UPDATE orders SET put_at = ? WHERE order_id = ?", (time.time(), order_id))

    def order_done(self, order_id: int, state: OrderState, detail: str | None = None) -> None:
        self.db.execute(
            "UPDATE orders SET state = ?, detail = ?, done_at = ?, last_error = NULL"
            " WHERE order_id = ?",
            (state, detail, time.time(), order_id),
        )

    def order_failed(self, order_id: int, error: str, retry_in: float) -> None:
        self.db.execute(
            "UPDATE orders SET attempts = attempts + 1, last_error = ?, next_try = ?"
            " WHERE order_id = ?",
            (error[:500], time.time() + retry_in, order_id),
        )

    def order_state(self, order_id: int) -> OrderState | None:
        row = self.db.execute("SELECT state FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else OrderState(row[0])

    def known_orders(self) -> set[int]:
        return {int(r[0]) for r in self.db.execute("SELECT order_id FROM orders")}

    def order_counts(self) -> dict[OrderState, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM orders GROUP BY state")
        return {OrderState(s): int(n) for s, n in rows}

    def conflicts(self, limit: int = 100) -> list[tuple[int, str]]:
        rows = self.db.execute(
            "SELECT order_id, COALESCE(detail, '') FROM orders WHERE state = ?"
            " ORDER BY order_id LIMIT ?",
            (OrderState.CONFLICT, limit),
        )
        return [(int(o), str(d)) for o, d in rows]

    def retrying(self) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM orders WHERE state = ? AND attempts > 0", (OrderState.PENDING,)
        ).fetchone()
        return int(row[0])

    def prune(self, before: float) -> None:
        """Forget enrolments and arrived or skipped events finished before ``before``
        (conflicts, pending and recovered ones are kept: ``sync status`` counts those)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "DELETE FROM orders WHERE state IN (?, ?) AND done_at < ?",
                (*ENROLLED_STATES, before),
            )
            self.db.execute(
                "DELETE FROM events WHERE state IN (?, ?) AND done_at < ?",
                (EventState.ARRIVED, EventState.SKIPPED, before),
            )

    # events
    def events_due(self, before: float) -> list[PendingEvent]:
        rows = self.db.execute(
            "SELECT message_id, event, order_id, identity, happened_at, body FROM events"
            " WHERE state = ? AND happened_at <= ? ORDER BY happened_at, message_id",
            (EventState.PENDING, before),
        ).fetchall()
        return [
            PendingEvent(str(m), str(e), int(o), str(i), float(h), b) for m, e, o, i, h, b in rows
        ]

    def event_done(self, message_id: str, state: EventState) -> None:
        """``arrived`` (the archive holds its webhook) or ``recovered`` (published and
        confirmed: call only after the broker's confirm)."""
        self.db.execute(
            "UPDATE events SET state = ?, done_at = ?, body = NULL WHERE message_id = ?",
            (state, time.time(), message_id),
        )

    def event_counts(self) -> dict[tuple[EventState, str], int]:
        rows = self.db.execute("SELECT state, event, COUNT(*) FROM events GROUP BY state, event")
        return {(EventState(s), str(e)): int(n) for s, e, n in rows}
