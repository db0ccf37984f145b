"""Opening the ledger database named by ``BRIDGE_LEDGER_URL``: SQLite (stdlib driver) or
PostgreSQL (psycopg 3), one SQLAlchemy engine either way.

Guarantees: the SQLite file and its directory are created private to the bridge's user
(0600 / 0700: the rows are customer data); SQLite runs in WAL mode, so one writer and any
number of readers work at once, and every transaction is a real one (``BEGIN`` is sent by
us, not left to the driver, so DDL and rows commit or roll back together). The writer's
transactions take the write lock up front (``BEGIN IMMEDIATE``).

Fails with :class:`~bridge.core.settings.SettingsError` when no ledger is configured and
:class:`~bridge.errors.CommandError` when the database cannot be opened; the URL in every
message is redacted (a password never appears).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bridge.core.settings import Settings, SettingsError, redact_url
from bridge.errors import CommandError
from bridge.ledger.migrations import require_schema, upgrade

BUSY_TIMEOUT_MS = 10_000
"""How long an SQLite reader or writer waits for a lock before failing."""
WRITER_CACHE_KIB = 1_048_576
"""SQLite page cache of the writer (KiB), a limit that SQLite fills only as pages are read:
random keys (record ids, times out of order) put every insert on index pages all over, and a
batch of the indexer dirties tens of thousands of pages that must stay in the cache until
its commit (else they spill to the WAL mid-transaction and are read back). At 4.5 million
rows the indexes a batch touches are about 600 MB; 64 MiB made most inserts a read. Less
under a container's memory limit: :func:`writer_cache_kib`."""
WRITER_CACHE_MIN_KIB = 65_536
"""The writer's cache under a small memory limit (the cache of the first versions)."""
WRITER_WAL_AUTOCHECKPOINT = 20_000
"""WAL pages (4 KiB: 80 MB) after which the writer's commit copies the WAL into the
database. SQLite's default, 1,000, checkpoints after every batch; pages that later batches
dirty again are then copied once per checkpoint, not once per batch."""


CGROUP_MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
"""Where the memory limit of the process's container (a pod's ``limits.memory``, systemd's
``MemoryMax``) can be read."""


def memory_limit(paths: Sequence[Path] = CGROUP_MEMORY_LIMITS) -> int | None:
    """The container's memory limit in bytes; ``None`` when there is none (``max``, cgroup
    v1's "unlimited" near 2**63, no cgroup file, or one that cannot be read)."""
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
        return None
    return None


def writer_cache_kib(limit: int | None) -> int:
    """The SQLite writer's page cache (KiB): :data:`WRITER_CACHE_KIB`, or half the
    container's memory ``limit`` when that is less, so that a pod or unit sized for
    PostgreSQL (deploy/kubernetes/ledger.yaml: 512 MiB) is not killed for memory as an
    SQLite ledger grows; never under :data:`WRITER_CACHE_MIN_KIB`. The other half holds the
    process itself and the two batches in hand."""
    if limit is None:
        return WRITER_CACHE_KIB
    return max(WRITER_CACHE_MIN_KIB, min(WRITER_CACHE_KIB, limit // 2 // 1024))


def ledger_url(settings: Settings) -> str:
    """The configured ledger URL; a :class:`SettingsError` naming the setting when empty."""
    if not settings.ledger_url:
        raise SettingsError(
            "BRIDGE_LEDGER_URL is empty, so there is no ledger: set it (e.g. "
            "sqlite:///./var/ledger.sqlite3) and run `mintsoft-bridge ledger`"
        )
    return settings.ledger_url


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` -> psycopg 3's dialect; SQLite URLs unchanged."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + rest
    return url


def is_sqlite(url: str) -> bool:
    return url.lower().startswith("sqlite:")


def sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite URL (``None`` for an in-memory one)."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def _private_file(path: Path) -> None:
    # Created before SQLite opens it, so it never exists with the umask's mode; an existing
    # file is tightened too (one made by an older build, or copied in).
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _sqlite_setup(engine: Engine, *, writer: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to us: the stdlib driver would not BEGIN before DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a process crash loses nothing committed; a power cut may lose the
        # last commits, rows and their offsets together, so they are read again.
        cursor.execute("PRAGMA synchronous = NORMAL")
        if writer:
            cursor.execute(f"PRAGMA cache_size = -{writer_cache_kib(memory_limit())}")
            cursor.execute(f"PRAGMA wal_autocheckpoint = {WRITER_WAL_AUTOCHECKPOINT}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


CONNECT_TIMEOUT = 5
"""Seconds a PostgreSQL connection may take to open."""


def open_engine(url: str, *, writer: bool = False) -> Engine:
    """An engine on the ledger at ``url`` (not yet connected: the first use connects).

    ``writer``: the indexer's engine; for SQLite it creates the file (private) if missing.
    A reader of an SQLite ledger whose file does not exist gets a :class:`CommandError`."""
    try:
        target = sqlalchemy_url(url)
        if is_sqlite(url):
            path = sqlite_path(url)
            if path is not None:
                if writer:
                    _private_file(path)
                elif not path.exists():
                    raise CommandError(
                        f"the ledger {redact_url(url)} does not exist yet: start "
                        "`mintsoft-bridge ledger` (it creates and fills it), or check "
                        "BRIDGE_LEDGER_URL"
                    )
            engine = create_engine(target)
            _sqlite_setup(engine, writer=writer)
            return engine
        if writer:
            # A commit does not wait for its WAL flush: a server crash may lose the last
            # commits, rows and their offsets together, so they are read again (as SQLite's
            # synchronous = NORMAL); the indexer's own crash loses nothing committed.
            return create_engine(
                target,
                pool_pre_ping=True,
                pool_size=2,
                max_overflow=4,
                connect_args={
                    "options": "-c synchronous_commit=off",
                    "connect_timeout": CONNECT_TIMEOUT,
                },
            )
        # Readers: every statement on its own (each one sees its own snapshot under READ
        # COMMITTED anyway), no BEGIN, ROLLBACK or ping round trips around a lookup; a
        # connection the server dropped is replaced by the one retry of LedgerReader. A server
        # that does not answer fails a connection after CONNECT_TIMEOUT seconds (libpq waits
        # for ever by default): the console's pages and sync then say so.
        return create_engine(
            target,
            pool_size=2,
            max_overflow=4,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": CONNECT_TIMEOUT},
        )
    except (ArgumentError, ValueError) as exc:
        raise SettingsError(f"BRIDGE_LEDGER_URL={redact_url(url)!r} is not usable: {exc}") from None
    except OSError as exc:
        raise CommandError(
            f"the ledger {redact_url(url)} cannot be created ({exc.strerror or exc}): check "
            "that the directory is writable by this user"
        ) from None


def unreachable(url: str, exc: SQLAlchemyError) -> CommandError:
    """The one-line error for a database that refused or failed, password left out."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    password = make_url(sqlalchemy_url(url)).password
    if password:
        reason = reason.replace(str(password), "***")
    return CommandError(
        f"the ledger {redact_url(url)} failed ({reason}): check that the database is up "
        "and BRIDGE_LEDGER_URL is right"
    )


def open_writer(url: str) -> Engine:
    """The indexer's engine, the schema created or upgraded (:mod:`.migrations`)."""
    engine = open_engine(url, writer=True)
    try:
        upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise unreachable(url, exc) from None
    return engine


def open_reader(url: str) -> Engine:
    """An engine for ``trace``, the console and sync: the schema must be there already."""
    engine = open_engine(url)
    try:
        require_schema(engine, redact_url(url))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise unreachable(url, exc) from None
    except CommandError:
        engine.dispose()
        raise
    return engine
