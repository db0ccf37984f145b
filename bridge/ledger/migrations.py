"""The ledger's schema version and its upgrades, run by SQLAlchemy on start.

Why not Alembic: the ledger has five tables, one writer that upgrades on start, and no
need for autogeneration or branches; Alembic would add an ini file, an env.py and a
versions directory to the package for what a list of functions does here.

How it works: a new database gets today's tables (:data:`bridge.ledger.schema.metadata`)
and is stamped :data:`VERSION`. A database at an older version runs each step after its
version, in order, each step and its new version number in one transaction (PostgreSQL and
SQLite both roll DDL back), so a crash leaves it at a whole version. Steps only add or
transform: none drops a table or deletes rows. A database newer than this build is refused
(an older binary must not write to a schema it does not know).

Only the writer (``ledger``) upgrades; readers (``trace``, console, sync) check the version.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, inspect, select

from bridge.errors import CommandError
from bridge.ledger.schema import audit, ledger_schema, metadata

Step = Callable[[Connection], None]


def _add_audit(connection: Connection) -> None:
    """Version 2: the ``audit`` table (operators' changes, for the console's ``/audit``)."""
    audit.create(connection)


STEPS: dict[int, Step] = {2: _add_audit}
"""Version -> the step that brings version - 1 up to it. Version 1 is the first schema
(created whole); add a step here whenever :mod:`bridge.ledger.schema` changes."""

VERSION = 2


def current_version(connection: Connection) -> int | None:
    """The stored version, or ``None`` for a database without the ledger's tables."""
    if not inspect(connection).has_table(ledger_schema.name):
        return None
    return connection.execute(select(ledger_schema.c.version)).scalar_one_or_none()


def _too_new(found: int, known: int) -> CommandError:
    return CommandError(
        f"the ledger's schema is version {found}, newer than this bridge knows ({known}): "
        "run the newer mintsoft-bridge, or point BRIDGE_LEDGER_URL at another database"
    )


def upgrade(
    engine: Engine, *, steps: dict[int, Step] | None = None, version: int | None = None
) -> int:
    """Create or upgrade the schema to ``version`` (default :data:`VERSION`); the version
    found before. ``steps`` and ``version`` are for tests of the mechanism."""
    steps = STEPS if steps is None else steps
    target = VERSION if version is None else version
    with engine.begin() as connection:
        found = current_version(connection)
        if found is None:
            metadata.create_all(connection)
            connection.execute(ledger_schema.insert().values(id=1, version=target))
            return 0
    if found > target:
        raise _too_new(found, target)
    for number in range(found + 1, target + 1):
        with engine.begin() as connection:
            # Read again under the write lock: another writer may have upgraded meanwhile.
            now = current_version(connection) or 0
            if now >= number:
                continue
            steps[number](connection)
            connection.execute(ledger_schema.update().values(version=number))
    return found


def require_schema(engine: Engine, url_for_messages: str) -> None:
    """For readers: a :class:`CommandError` unless the schema is there and not newer."""
    with engine.connect() as connection:
        found = current_version(connection)
    if found is None:
        raise CommandError(
            f"the ledger {url_for_messages} holds no tables yet: start `mintsoft-bridge "
            "ledger` (it creates them), or check BRIDGE_LEDGER_URL"
        )
    if found > VERSION:
        raise _too_new(found, VERSION)
