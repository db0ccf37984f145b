"""What the console's subscriber page and overview cards ask the ledger about one subscriber:
its last delivery, its last error and since when it has been failing, its last throttle
(until when), its attempts per minute over the last hour, and its oldest undelivered
webhook as the indexer's last pass found it. Read-only and synchronous.

Every question is a seek on an index, whatever the table's size:

- last delivery / error / throttle, and the first failure after the last delivery: one
  ``ORDER BY at LIMIT 1`` per outcome on ``attempts_subscriber_outcome_at`` (subscriber,
  outcome, at), so a delivery behind a day of failures is found as fast as one a second ago;
- per minute: 60 ranges of the same index (one a minute), counted by the database in one
  statement (it costs what that hour holds, never the table);
- undelivered: the ``subscribers`` row, written by the indexer every 15 s
  (:func:`bridge.ledger.store.store_undelivered`): the console never runs that query itself
  (a first pass reads every unsettled candidate: seconds on a big ledger).

Raises SQLAlchemy's errors (:class:`bridge.ledger.queries.LedgerReader` turns them into one
line), and a :class:`~bridge.errors.CommandError` for a schema older than these figures (a
console upgraded before its ``ledger``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, literal, select, union_all

from bridge.core.records import Outcome
from bridge.ledger.reading import read_row, require_schema
from bridge.ledger.rows import utc
from bridge.ledger.schema import attempts, subscribers
from bridge.ledger.store import current_at

FIGURES_SINCE_VERSION = 3
"""The schema version that added what these questions read (:mod:`.migrations`)."""
WINDOW_MINUTES = 60
FAILED_OUTCOMES = (Outcome.FAILED, Outcome.DEAD)
"""What counts as a failed attempt (retried, or moved to the DLQ)."""


@dataclass(frozen=True)
class Seen:
    """One attempt, as the figures show it."""

    at: datetime
    outcome: str
    message_id: str
    event: str
    order_id: str | None
    order_number: str | None
    attempt: int
    status: int | None
    answer: str | None
    error: str | None
    retry_after: float | None


@dataclass(frozen=True)
class Minute:
    """Attempts of one minute (``start`` to ``start`` + 60 s)."""

    start: datetime
    delivered: int = 0
    failed: int = 0
    throttled: int = 0


@dataclass(frozen=True)
class SubscriberFigures:
    name: str
    as_of: datetime
    last_delivery: Seen | None
    last_error: Seen | None
    """The latest ``failed`` or ``dead`` attempt."""
    failing_since: datetime | None
    """The first failure after the last delivery, when the latest error is newer than it."""
    last_throttle: Seen | None
    minutes: tuple[Minute, ...]
    """The last :data:`WINDOW_MINUTES` minutes, oldest first (the last one still running)."""
    known: bool
    """The ledger knows the subscriber (``ledger --config`` names it): undelivered applies."""
    undelivered_oldest: datetime | None
    undelivered_at: datetime | None
    """When the indexer's undelivered pass ran last (``None``: never for this subscriber)."""
    deliveries_current_at: datetime | None
    """Every delivery record appended before this is in the ledger (its indexer's mark)."""

    @property
    def delivered(self) -> int:
        return sum(m.delivered for m in self.minutes)

    @property
    def failed(self) -> int:
        return sum(m.failed for m in self.minutes)

    @property
    def throttled(self) -> int:
        return sum(m.throttled for m in self.minutes)

    @property
    def failing(self) -> bool:
        """Its latest error is newer than its last delivery and within the window."""
        return (
            self.failing_since is not None
            and self.last_error is not None
            and self.as_of - self.last_error.at <= timedelta(minutes=WINDOW_MINUTES)
        )

    @property
    def throttled_until(self) -> datetime | None:
        """When its latest throttle's pause ends, if that is still ahead."""
        last = self.last_throttle
        if last is None or last.retry_after is None:
            return None
        until = last.at + timedelta(seconds=last.retry_after)
        newer = [s.at for s in (self.last_delivery, self.last_error) if s is not None]
        if until <= self.as_of or any(at > last.at for at in newer):
            return None
        return until


def subscriber_figures(
    engine: Engine, names: Sequence[str], deliveries: str, now: datetime
) -> dict[str, SubscriberFigures]:
    """The figures of each subscriber in ``names`` as of ``now`` (aware, UTC);
    ``deliveries`` is the deliveries stream's name (how current the ledger is)."""
    with engine.connect() as connection:
        require_schema(connection, FIGURES_SINCE_VERSION, "its subscriber figures")
        current = current_at(connection, deliveries)
        rows = connection.execute(
            select(
                subscribers.c.name, subscribers.c.undelivered_oldest, subscribers.c.undelivered_at
            )
        ).all()
        undelivered = {row.name: row for row in rows}
        return {name: _one(connection, name, now, current, undelivered.get(name)) for name in names}


def _one(
    connection: Connection, name: str, now: datetime, current: datetime | None, known: Any
) -> SubscriberFigures:
    delivered = _latest(connection, name, Outcome.DELIVERED)
    errors = [s for s in (_latest(connection, name, o) for o in FAILED_OUTCOMES) if s]
    last_error = max(errors, key=lambda s: s.at, default=None)
    failing_since = None
    if last_error is not None and (delivered is None or last_error.at > delivered.at):
        after = delivered.at if delivered is not None else None
        firsts = [_first_after(connection, name, o, after) for o in FAILED_OUTCOMES]
        failing_since = min((at for at in firsts if at is not None), default=last_error.at)
    return SubscriberFigures(
        name=name,
        as_of=now,
        last_delivery=delivered,
        last_error=last_error,
        failing_since=failing_since,
        last_throttle=_latest(connection, name, Outcome.THROTTLED),
        minutes=_minutes(connection, name, now),
        known=known is not None,
        undelivered_oldest=_aware(known.undelivered_oldest) if known is not None else None,
        undelivered_at=_aware(known.undelivered_at) if known is not None else None,
        deliveries_current_at=current,
    )


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def _one_outcome(name: str, outcome: str) -> list[Any]:
    """The conditions "this subscriber, this outcome", the outcome as a one-value range.

    Why a range: ordered by ``(outcome, at)`` (below), only the index (subscriber, outcome,
    at) yields the rows in that order. With ``outcome = ...`` PostgreSQL drops the constant
    from the order and may walk ``attempts_at`` backwards, filtering, instead: it assumes
    the outcome spread evenly over time, so a last delivery behind an hour of failures took
    a scan of every failure (50 ms at 100,000, growing with the outage; 0.04 ms this way)."""
    return [
        attempts.c.subscriber == name,
        attempts.c.outcome >= str(outcome),
        attempts.c.outcome <= str(outcome),
    ]


def latest_statement(name: str, outcome: str) -> Select[Any]:
    """The subscriber's newest attempt of ``outcome``."""
    return (
        select(attempts)
        .where(*_one_outcome(name, outcome))
        .order_by(attempts.c.outcome.desc(), attempts.c.at.desc())
        .limit(1)
    )


def first_after_statement(name: str, outcome: str, after: datetime | None) -> Select[Any]:
    """The time of the subscriber's first attempt of ``outcome`` after ``after``."""
    where = _one_outcome(name, outcome)
    if after is not None:
        where.append(attempts.c.at > after)
    return select(attempts.c.at).where(*where).order_by(attempts.c.outcome, attempts.c.at).limit(1)


def _latest(connection: Connection, name: str, outcome: str) -> Seen | None:
    row = connection.execute(latest_statement(name, outcome)).first()
    if row is None:
        return None
    return read_row(Seen, row)


def _first_after(
    connection: Connection, name: str, outcome: str, after: datetime | None
) -> datetime | None:
    found = connection.execute(first_after_statement(name, outcome, after)).scalar()
    return None if found is None else utc(found)


def window_start(now: datetime) -> datetime:
    """The start of the oldest minute shown: :data:`WINDOW_MINUTES` whole minutes, the last
    one the minute running at ``now``."""
    minute = now.replace(second=0, microsecond=0)
    return minute - timedelta(minutes=WINDOW_MINUTES - 1)


def _minutes(connection: Connection, name: str, now: datetime) -> tuple[Minute, ...]:
    """Attempts per outcome and minute: one statement of :data:`WINDOW_MINUTES` range
    counts (``UNION ALL``), each a range of ``attempts_subscriber_outcome_at`` per outcome.
    (Grouping by a minute computed per row was several times slower on SQLite: a function
    call per row and a temporary B-tree for the groups.)"""
    start = window_start(now)
    edges = [start + timedelta(minutes=i) for i in range(WINDOW_MINUTES + 1)]
    counted = [str(o) for o in (Outcome.DELIVERED, *FAILED_OUTCOMES, Outcome.THROTTLED)]
    parts = [
        select(literal(i).label("minute"), attempts.c.outcome, func.count().label("n"))
        .where(
            attempts.c.subscriber == name,
            attempts.c.outcome.in_(counted),
            attempts.c.at >= edges[i],
            attempts.c.at < edges[i + 1],
        )
        .group_by(attempts.c.outcome)
        for i in range(WINDOW_MINUTES)
    ]
    counts: dict[tuple[int, str], int] = {}
    for index, outcome, count in connection.execute(union_all(*parts)):
        kind = "failed" if outcome in FAILED_OUTCOMES else str(outcome)
        counts[index, kind] = counts.get((index, kind), 0) + int(count)
    return tuple(
        Minute(
            edges[i],
            delivered=counts.get((i, "delivered"), 0),
            failed=counts.get((i, "failed"), 0),
            throttled=counts.get((i, "throttled"), 0),
        )
        for i in range(WINDOW_MINUTES)
    )
