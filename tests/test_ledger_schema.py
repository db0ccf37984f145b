"""The ledger's database: one schema on SQLite and PostgreSQL, upgrades that keep rows,
private SQLite files, rows and offsets written together, and URLs never shown with their
password."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, DateTime, func, inspect, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import SQLAlchemyError

from bridge.core.settings import SettingsError, load_settings
from bridge.errors import CommandError
from bridge.ledger.database import (
    memory_limit,
    open_engine,
    open_reader,
    open_writer,
    sqlite_path,
    writer_cache_kib,
)
from bridge.ledger.migrations import VERSION, current_version, upgrade
from bridge.ledger.rows import utc
from bridge.ledger.schema import attempts, stream_offsets, webhooks
from bridge.ledger.store import Batch, remove_before, sqlite_time, stored_offsets, write_batch
from tests.support.ledger_rows import STREAMS, attempt_row, webhook_row


def test_a_new_ledger_gets_every_table_at_the_current_version(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    with engine.connect() as connection:
        assert current_version(connection) == VERSION
        names = set(inspect(connection).get_table_names())
    assert {"webhooks", "attempts", "subscribers", "stream_offsets", "ledger_schema"} <= names
    indexes = {i["name"] for i in inspect(engine).get_indexes("attempts")}
    assert {"attempts_message_id", "attempts_order_id", "attempts_subscriber_at"} <= indexes
    engine.dispose()


def test_the_sqlite_file_is_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'ledger.sqlite3'}"
    open_writer(url).dispose()
    path = sqlite_path(url)
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


def test_the_sqlite_writer_caches_a_batch_and_checkpoints_seldom(tmp_path: Path) -> None:
    # A batch of random keys dirties tens of thousands of pages: the writer's cache holds
    # them until the commit, and the WAL is copied back after many batches, not each one.
    # Readers keep SQLite's defaults (one cache per console connection).
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    writer = open_writer(url)
    reader = open_reader(url)
    with writer.connect() as connection:
        cache_kib = -connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
        checkpoint = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
    with reader.connect() as connection:
        reader_checkpoint = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
        reader_cache = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
    writer.dispose()
    reader.dispose()
    # 1 GiB, or half the memory limit of a container the tests run in.
    assert cache_kib == writer_cache_kib(memory_limit()) >= 64 * 1024
    assert checkpoint >= 10_000
    assert (reader_checkpoint, reader_cache) == (1000, -2000)


def test_the_sqlite_writer_cache_follows_the_containers_memory_limit(tmp_path: Path) -> None:
    # A pod sized for PostgreSQL (512 MiB) running an SQLite ledger: half of it, not 1 GiB.
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("536870912\n")
    assert memory_limit([v2, v1]) == 512 * 1024 * 1024
    assert writer_cache_kib(memory_limit([v2, v1])) == 256 * 1024
    v2.write_text("max\n")
    assert memory_limit([v2, v1]) is None
    assert writer_cache_kib(None) == 1024 * 1024  # no limit: the full cache
    v1.write_text(f"{2**63 - 4096}\n")  # cgroup v1's "unlimited"
    assert memory_limit([tmp_path / "absent", v1]) is None
    v1.write_text(f"{8 * 2**30}\n")
    assert writer_cache_kib(memory_limit([tmp_path / "absent", v1])) == 1024 * 1024
    assert writer_cache_kib(64 * 2**20) == 64 * 1024  # never under the old 64 MiB
    assert memory_limit([tmp_path / "absent"]) is None


def test_an_upgrade_keeps_every_row(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    batch = Batch(webhooks=[webhook_row(n) for n in range(50)])
    batch.cover("x.archive", 49)
    write_batch(engine, batch, STREAMS)

    def add_column(connection: Connection) -> None:
        connection.execute(text("ALTER TABLE webhooks ADD COLUMN note VARCHAR(20)"))

    found = upgrade(engine, steps={VERSION + 1: add_column}, version=VERSION + 1)
    assert found == VERSION
    with engine.connect() as connection:
        assert current_version(connection) == VERSION + 1
        assert connection.execute(select(func.count()).select_from(webhooks)).scalar() == 50
        assert "note" in {c["name"] for c in inspect(connection).get_columns("webhooks")}
    # Opening it again with this build's steps refuses a schema it does not know.
    with pytest.raises(CommandError, match="newer than this bridge knows"):
        upgrade(engine)
    engine.dispose()


def test_a_failed_upgrade_step_leaves_the_previous_version(ledger_db: str) -> None:
    engine = open_writer(ledger_db)

    def broken(connection: Connection) -> None:
        connection.execute(text("ALTER TABLE webhooks ADD COLUMN half INTEGER"))
        raise RuntimeError("step fails half-way")

    with pytest.raises(RuntimeError):
        upgrade(engine, steps={VERSION + 1: broken}, version=VERSION + 1)
    with engine.connect() as connection:
        assert current_version(connection) == VERSION
        assert "half" not in {c["name"] for c in inspect(connection).get_columns("webhooks")}
    engine.dispose()


def test_rows_and_offsets_are_written_together_and_duplicates_counted(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    first = Batch(webhooks=[webhook_row(n) for n in range(10)])
    first.cover("x.archive", 9)
    assert write_batch(engine, first, STREAMS) == 0
    again = Batch(webhooks=[webhook_row(n) for n in range(5, 15)])
    again.cover("x.archive", 14)
    again.malformed["x.archive"] += 2
    assert write_batch(engine, again, STREAMS) == 5
    assert stored_offsets(engine) == {"x.archive": 14}
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(webhooks)).scalar() == 15
        row = connection.execute(select(stream_offsets)).one()
    assert (row.duplicates, row.malformed) == (5, 2)
    engine.dispose()


def test_a_batch_that_fails_writes_neither_rows_nor_offsets(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    bad = Batch(webhooks=[webhook_row(1), {**webhook_row(2), "event": None}])  # NOT NULL refused
    bad.cover("x.archive", 2)
    # As SQLAlchemy's error (the indexer retries those), whichever driver raised it.
    with pytest.raises(SQLAlchemyError, match="event"):
        write_batch(engine, bad, STREAMS)
    assert stored_offsets(engine) == {}
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(webhooks)).scalar() == 0
    engine.dispose()


def test_retention_removes_only_older_rows(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    now = datetime.now(UTC)
    batch = Batch(webhooks=[webhook_row(n, now - timedelta(days=n)) for n in range(10)])
    batch.attempts = [attempt_row(n, now - timedelta(days=n)) for n in range(10)]
    write_batch(engine, batch, STREAMS)
    assert remove_before(engine, now - timedelta(days=4, hours=12)) == 10
    with engine.connect() as connection:
        left = connection.execute(select(webhooks.c.message_id)).scalars().all()
        assert sorted(left) == [f"m-{n}" for n in range(5)]
        assert connection.execute(select(func.count()).select_from(attempts)).scalar() == 5
    engine.dispose()


def test_a_reader_never_creates_a_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.sqlite3'}"
    with pytest.raises(CommandError, match="does not exist yet"):
        open_reader(url)
    assert not (tmp_path / "none.sqlite3").exists()


def test_a_reader_of_an_empty_database_is_told_to_start_the_ledger(ledger_db: str) -> None:
    open_engine(ledger_db, writer=True).dispose()  # the file exists (SQLite), no tables
    with pytest.raises(CommandError, match="holds no tables yet"):
        open_reader(ledger_db)


def test_the_ledger_url_setting() -> None:
    assert load_settings({}).ledger_url == "sqlite:///./var/ledger.sqlite3"
    assert load_settings({"BRIDGE_LEDGER_URL": ""}).ledger_url is None
    with pytest.raises(SettingsError) as bad:
        load_settings({"BRIDGE_LEDGER_URL": "mysql://u:s3cret@h/db"})
    assert "BRIDGE_LEDGER_URL" in str(bad.value) and "s3cret" not in str(bad.value)


def test_the_ledger_url_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("postgresql://bridge:s3cret@db:5432/ledger\n")
    settings = load_settings({"BRIDGE_LEDGER_URL_FILE": str(secret)})
    assert settings.ledger_url == "postgresql://bridge:s3cret@db:5432/ledger"
    assert "s3cret" not in repr(settings)


def test_a_database_that_fails_is_one_line_without_the_password() -> None:
    url = "postgresql://bridge:s3cret@127.0.0.1:1/ledger"
    with pytest.raises(CommandError) as failed:
        open_writer(url)
    message = str(failed.value)
    assert "s3cret" not in message and "bridge:***@127.0.0.1:1" in message
    assert "\n" not in message


def attempt(n: int, at: datetime) -> dict[str, object]:
    """Attempts that vary every field a reader could get back wrong."""
    return attempt_row(
        n,
        at,
        message_id=f"m-{n // 2}",
        subscriber="erp" if n % 2 else "wms",
        order_id=str(n // 2),
        order_number=None if n % 3 else f"SO-{n // 2}",
        attempt=1 + n % 3,
        status=None if n % 5 == 0 else 200,
        answer="ünïcode ✓" if n % 7 == 0 else None,
        duration_ms=None if n % 4 == 0 else n / 8,
    )


def test_large_batches_read_back_as_written_and_duplicates_are_counted(ledger_db: str) -> None:
    engine = open_writer(ledger_db)
    start = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    # Whole seconds too: SQLAlchemy's SQLite form always has the microseconds.
    times = [start + timedelta(seconds=n, microseconds=0 if n % 2 else n) for n in range(12_000)]
    first = Batch(
        webhooks=[webhook_row(n, times[n]) for n in range(6_000)],
        attempts=[attempt(n, times[n]) for n in range(12_000)],
    )
    first.cover("x.archive", 5_999)
    first.cover("x.deliveries", 11_999)
    assert write_batch(engine, first, STREAMS) == 0
    # Three rows already in: the batch is still written, those three are counted.
    again = Batch(attempts=[attempt(n, times[n % 12_000]) for n in range(11_997, 17_000)])
    again.cover("x.deliveries", 16_999)
    assert write_batch(engine, again, STREAMS) == 3
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(attempts)).scalar() == 17_000
        rows = {r.record_id: r for r in connection.execute(select(attempts))}
        hooks = {r.message_id: r for r in connection.execute(select(webhooks))}
        offsets = {r.stream: r.duplicates for r in connection.execute(select(stream_offsets))}
        # Range queries compare the stored times as SQLAlchemy writes its parameters.
        window = select(func.count()).where(attempts.c.at >= times[100], attempts.c.at < times[200])
        assert connection.execute(window).scalar() == 100 + 100  # both batches' copies
    assert offsets == {"x.archive": 0, "x.deliveries": 3}
    for n in (0, 1, 7, 20, 11_999):
        row = rows[f"r-{n}"]
        expected = attempt(n, times[n])
        assert utc(row.at) == times[n]
        assert {k: getattr(row, k) for k in expected if k != "at"} == {
            k: v for k, v in expected.items() if k != "at"
        }
    assert utc(hooks["m-5"].received_at) == times[5] and hooks["m-5"].order_id == "5"
    engine.dispose()


def test_sqlite_times_are_stored_as_sqlalchemy_stores_them() -> None:
    dialect = sqlite.dialect()
    store = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert store is not None
    for value in (
        datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC),
        datetime(2026, 12, 7, 10, 0, 0, 5, tzinfo=UTC),
        datetime(2026, 12, 7, 10, 0, 0, 123456),
    ):
        assert sqlite_time(value) == store(value)
