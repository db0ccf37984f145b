"""What the indexer writes: a batch of rows with the stream offsets that cover them, in ONE
transaction, so the database never holds a row without its offset or an offset without
its rows. After a crash the indexer reads on from the stored offsets: nothing is lost and
nothing is written twice. The unique keys (``message_id``, ``record_id``) are the second
guard: a row they turn away is counted in ``stream_offsets.duplicates`` (0 while the first
guard holds), never written twice.

Also the slower chores of the one writer: the subscribers of ``--config``, and removing
rows past the archive's retention. Synchronous (the indexer runs it in a thread); raises
SQLAlchemy's errors, which the caller turns into one line.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter

import orjson
import psycopg
from sqlalchemy import Connection, DateTime, Engine, Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from bridge.ledger.rows import Row, utc
from bridge.ledger.schema import attempts, audit, stream_offsets, subscribers, webhooks

DELETE_CHUNK = 10_000
"""Rows one retention delete removes per transaction: the writer's lock is held briefly."""


@dataclass(frozen=True)
class SubscriberSpec:
    """What the ledger needs of a subscriber: which webhooks are for it."""

    name: str
    events: tuple[str, ...]
    clients: tuple[str, ...] = ()
    warehouses: tuple[str, ...] = ()

    def takes(self, event: str, client_id: str | None, warehouse_id: str | None) -> bool:
        """Whether a webhook with these headers reaches the subscriber's queue (the same
        rule as its bindings: events, then every client and warehouse filter set)."""
        if event not in self.events:
            return False
        if self.clients and client_id not in self.clients:
            return False
        return not (self.warehouses and warehouse_id not in self.warehouses)


@dataclass(frozen=True)
class KnownSubscriber:
    spec: SubscriberSpec
    first_seen: datetime


@dataclass
class Batch:
    """Rows read from the streams and, per stream, the last offset they cover (including
    messages skipped or found malformed)."""

    webhooks: list[Row] = field(default_factory=list)
    attempts: list[Row] = field(default_factory=list)
    audit: list[Row] = field(default_factory=list)
    """Audit records: they come with the attempts, in the deliveries stream."""
    offsets: dict[str, int] = field(default_factory=dict)
    malformed: Counter[str] = field(default_factory=Counter)
    newest: dict[str, datetime] = field(default_factory=dict)
    """Per stream, the time of the newest message in the batch (when it has one)."""

    def __len__(self) -> int:
        return len(self.webhooks) + len(self.attempts) + len(self.audit)

    def rows(self, table: str) -> list[Row]:
        """The rows for ``table`` ("webhooks", "attempts" or "audit")."""
        return {"webhooks": self.webhooks, "attempts": self.attempts, "audit": self.audit}[table]

    def cover(self, stream: str, offset: int, at: datetime | None = None) -> None:
        self.offsets[stream] = max(offset, self.offsets.get(stream, -1))
        if at is not None and (stream not in self.newest or at > self.newest[stream]):
            self.newest[stream] = at


def _insert(connection: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    # Both dialects spell "insert unless the key exists" the same way (ON CONFLICT).
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _insert_new(connection: Connection, table: Table, key: str, rows: list[Row]) -> int:
    """Insert ``rows`` but those whose ``key`` exists; how many were turned away."""
    if not rows:
        return 0
    _complete(table, rows)
    try:
        if connection.dialect.name == "postgresql":
            return _copy_postgresql(connection, table, key, rows)
        return _insert_new_sqlite(connection, table, key, rows)
    except (psycopg.Error, sqlite3.Error) as exc:
        # The driver's own cursor: its errors as SQLAlchemy's, as every caller expects.
        raise DBAPIError(f"insert into {table.name}", None, exc) from exc


def _complete(table: Table, rows: list[Row]) -> None:
    """Rows made without a nullable column a later schema version added (``retry_after``
    of version 3) get it as NULL; the writers below read every column by name. Looks at
    the first row only: a batch's rows come from one producer."""
    missing = [
        c.name for c in table.c if not c.primary_key and c.nullable and c.name not in rows[0]
    ]
    for row in rows if missing else ():
        for name in missing:
            row.setdefault(name, None)


_PG_TYPES = {
    "VARCHAR": "varchar",
    "TEXT": "text",
    "INTEGER": "int4",
    "BIGINT": "int8",
    "FLOAT": "float8",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
}


def _copy_postgresql(connection: Connection, table: Table, key: str, rows: list[Row]) -> int:
    # COPY (binary, rows written by psycopg's C code): a sixth of the client's CPU of an
    # INSERT, and no per-row executor on the server. COPY cannot skip a row whose key
    # exists, so it runs under a savepoint: a duplicate (none while the offsets hold) rolls
    # it back and the batch goes through the INSERT that counts them.
    columns = [c for c in table.c if not c.primary_key]
    types = [_PG_TYPES[c.type.compile(dialect=connection.dialect).split("(")[0]] for c in columns]
    names = ", ".join(c.name for c in columns)
    values = itemgetter(*(c.name for c in columns))
    driver = connection.connection.driver_connection
    cursor = driver.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SAVEPOINT ledger_copy")
        try:
            with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(values(row))
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT ledger_copy")
            return _insert_new_postgresql(connection, table, key, rows)
        cursor.execute("RELEASE SAVEPOINT ledger_copy")
    finally:
        cursor.close()
    return 0


def sqlite_time(value: datetime) -> str:
    """A time as SQLAlchemy stores it in SQLite (text, microseconds, the zone left out: the
    ledger's times are UTC), so readers through SQLAlchemy compare and read it alike."""
    text = value.isoformat(" ")  # wall time, then the zone when aware: cut off
    return text[:26] if value.microsecond else text[:19] + ".000000"


def _insert_new_sqlite(connection: Connection, table: Table, key: str, rows: list[Row]) -> int:
    # The driver's executemany with plain tuples: SQLAlchemy's own (RETURNING, a type
    # processor per value) cost more than SQLite's inserts. The time column goes last,
    # formatted as SQLAlchemy would (sqlite_time); the row count sums every insert.
    columns = [c for c in table.c if not c.primary_key]
    times = [c.name for c in columns if isinstance(c.type, DateTime)]
    plain = [c.name for c in columns if c.name not in times]
    (when,) = times
    names = ", ".join([*plain, when])
    marks = ", ".join("?" * (len(plain) + 1))
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({marks}) ON CONFLICT ({key}) DO NOTHING"
    values = itemgetter(*plain)
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, [(*values(row), sqlite_time(row[when])) for row in rows])
        written = int(cursor.rowcount)
    finally:
        cursor.close()
    return len(rows) - written


def _insert_new_postgresql(connection: Connection, table: Table, key: str, rows: list[Row]) -> int:
    # One statement whatever the batch's size: a column of values per array, unnested by the
    # server. (A multi-VALUES insert has a placeholder per value, and psycopg parses each of
    # them: ten times slower at 500 rows.) The row count says exactly how many were new.
    columns = [c for c in table.c if not c.primary_key]
    casts = ", ".join(f"%s::{c.type.compile(dialect=connection.dialect)}[]" for c in columns)
    names = ", ".join(c.name for c in columns)
    sql = (
        f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({casts}) "
        f"ON CONFLICT ({key}) DO NOTHING"
    )
    arrays = tuple([row[c.name] for row in rows] for c in columns)
    # Binary parameters: psycopg's text form escapes every array element (slow in Python).
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, arrays, binary=True)
        written = int(cursor.rowcount)
    finally:
        cursor.close()
    return len(rows) - written


def write_batch(engine: Engine, batch: Batch, streams: dict[str, str]) -> int:
    """Write ``batch`` and its offsets in one transaction; the rows turned away as
    duplicates. ``streams`` maps "webhooks"/"attempts" to their stream names."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        duplicates = Counter(
            {
                streams["webhooks"]: _insert_new(
                    connection, webhooks, "message_id", batch.webhooks
                ),
                streams["attempts"]: _insert_new(connection, attempts, "record_id", batch.attempts)
                + _insert_new(connection, audit, "audit_id", batch.audit),
            }
        )
        for stream, offset in batch.offsets.items():
            statement = _insert(connection, stream_offsets).values(
                stream=stream,
                last_offset=offset,
                duplicates=duplicates[stream],
                malformed=batch.malformed[stream],
                current_at=batch.newest.get(stream),
                updated_at=now,
            )
            excluded = statement.excluded
            changes = {
                "last_offset": excluded.last_offset,
                "duplicates": stream_offsets.c.duplicates + excluded.duplicates,
                "malformed": stream_offsets.c.malformed + excluded.malformed,
                "updated_at": excluded.updated_at,
            }
            if stream in batch.newest:
                changes["current_at"] = excluded.current_at
            connection.execute(
                statement.on_conflict_do_update(index_elements=["stream"], set_=changes)
            )
    return sum(duplicates.values())


def mark_current(engine: Engine, streams: Sequence[str], at: datetime) -> None:
    """Record that every message of ``streams`` appended before ``at`` is in the ledger
    (the indexer, idle and attached, has seen their ends)."""
    with engine.begin() as connection:
        for stream in streams:
            statement = _insert(connection, stream_offsets).values(
                stream=stream,
                last_offset=-1,
                duplicates=0,
                malformed=0,
                current_at=at,
                updated_at=at,
            )
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["stream"], set_={"current_at": statement.excluded.current_at}
                )
            )


def current_at(connection: Connection, stream: str) -> datetime | None:
    """The :func:`mark_current` / batch time of ``stream``; ``None`` when never indexed."""
    found = connection.execute(
        select(stream_offsets.c.current_at).where(stream_offsets.c.stream == stream)
    ).scalar_one_or_none()
    return None if found is None else utc(found)


def newest_received(engine: Engine) -> datetime | None:
    """The receive time of the newest webhook in the ledger (an index seek); ``None`` when
    it holds none."""
    with engine.connect() as connection:
        found = connection.execute(select(func.max(webhooks.c.received_at))).scalar()
    return None if found is None else utc(found)


def stored_offsets(engine: Engine) -> dict[str, int]:
    """Per stream, the last offset written (where the indexer reads on: one past it)."""
    with engine.connect() as connection:
        rows = connection.execute(select(stream_offsets.c.stream, stream_offsets.c.last_offset))
        return {stream: int(offset) for stream, offset in rows}


def store_subscribers(engine: Engine, specs: Sequence[SubscriberSpec]) -> None:
    """Make the known subscribers ``specs`` (the ``--config`` file's, as of now); one seen
    before keeps the time it was first seen."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        names = [spec.name for spec in specs]
        connection.execute(delete(subscribers).where(subscribers.c.name.not_in(names)))
        for spec in specs:
            statement = _insert(connection, subscribers).values(
                name=spec.name,
                events=orjson.dumps(list(spec.events)).decode(),
                clients=orjson.dumps(list(spec.clients)).decode(),
                warehouses=orjson.dumps(list(spec.warehouses)).decode(),
                first_seen=now,
                updated_at=now,
            )
            excluded = statement.excluded
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["name"],
                    set_={
                        "events": excluded.events,
                        "clients": excluded.clients,
                        "warehouses": excluded.warehouses,
                        "updated_at": excluded.updated_at,
                    },
                )
            )


def store_undelivered(engine: Engine, oldest: dict[str, datetime | None], at: datetime) -> None:
    """Keep an undelivered pass's result (per known subscriber, the receive time of its
    oldest unsettled webhook, ``None`` for none) and when it ran, for the console."""
    with engine.begin() as connection:
        for name, when in oldest.items():
            connection.execute(
                update(subscribers)
                .where(subscribers.c.name == name)
                .values(undelivered_oldest=when, undelivered_at=at)
            )


def known_subscribers(connection: Connection) -> list[KnownSubscriber]:
    """The subscribers the last ``ledger --config`` stored, by name."""
    rows = connection.execute(select(subscribers).order_by(subscribers.c.name))
    return [
        KnownSubscriber(
            SubscriberSpec(
                row.name,
                tuple(orjson.loads(row.events)),
                tuple(orjson.loads(row.clients)),
                tuple(orjson.loads(row.warehouses)),
            ),
            utc(row.first_seen),
        )
        for row in rows
    ]


def remove_before(engine: Engine, cutoff: datetime) -> int:
    """Delete webhooks received, attempts and audited changes made before ``cutoff``
    (indexed deletes, in chunks of :data:`DELETE_CHUNK`); how many rows went."""
    removed = 0
    tables = ((webhooks, webhooks.c.received_at), (attempts, attempts.c.at), (audit, audit.c.at))
    for table, column in tables:
        while True:
            with engine.begin() as connection:
                old = select(table.c.id).where(column < cutoff).limit(DELETE_CHUNK)
                gone = connection.execute(delete(table).where(table.c.id.in_(old))).rowcount
            removed += gone
            if gone < DELETE_CHUNK:
                break
    return removed


def optimize(engine: Engine) -> None:
    """Refresh the query planner's statistics where the database does not by itself
    (SQLite's ``PRAGMA optimize``; PostgreSQL's autovacuum analyzes on its own)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA optimize")
