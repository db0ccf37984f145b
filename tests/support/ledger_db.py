"""Ledger databases for tests: a fresh SQLite file, or a uniquely named PostgreSQL database
on the machine's server (127.0.0.1:5432, user postgres, trust auth) dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

PG_ADMIN_URL = os.environ.get("BRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
KINDS = ("sqlite", "postgresql")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new empty database; its URL (``postgresql://...``). Dropped on exit, even when a
    process still holds a connection to it."""
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def ledger_database(kind: str, directory: Path) -> Iterator[str]:
    """A fresh ledger URL of ``kind`` (``sqlite`` or ``postgresql``)."""
    if kind == "sqlite":
        directory.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{directory / 'ledger.sqlite3'}"
        return
    with postgres_database() as url:
        yield url
