"""What ``trace``, the console, sync and the indexer's gauges ask the ledger. Read-only and
synchronous (async callers run them in a thread); each answer comes from indexed lookups
(order id, order number, message id, subscriber and time), never from a scan of all rows.

Raises SQLAlchemy's errors; callers turn them into one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, and_, exists, func, or_, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from bridge.ledger.audits import AuditPage, Changes, audit_page, latest_changes
from bridge.ledger.database import open_reader, unreachable
from bridge.ledger.figures import SubscriberFigures, subscriber_figures
from bridge.ledger.reading import read_row
from bridge.ledger.rows import utc
from bridge.ledger.schema import attempts, webhooks
from bridge.ledger.states import SETTLED_OUTCOMES, State, state_of
from bridge.ledger.store import KnownSubscriber, current_at, known_subscribers

T = TypeVar("T")

MAX_WEBHOOKS = 200
"""A trace shows at most this many webhooks (the newest): an order has a handful."""


@dataclass(frozen=True)
class Attempt:
    at: datetime
    attempt: int
    outcome: str
    status: int | None
    answer: str | None
    error: str | None
    duration_ms: float | None
    source: str
    operator: str | None


@dataclass(frozen=True)
class SubscriberTrace:
    name: str
    state: State
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True)
class WebhookTrace:
    message_id: str
    event: str
    order_id: str | None
    order_number: str | None
    received_at: datetime | None  # None: attempts recorded, the webhook not (yet) indexed
    source: str | None
    bytes: int | None
    subscribers: tuple[SubscriberTrace, ...]
    stream_offset: int | None = None  # in the archive (the console links to the webhook)


@dataclass(frozen=True)
class Coverage:
    """What the ledger holds: its oldest and newest webhook's receive time (``None``: it
    holds none), and the time up to which it has indexed the archive (``None``: never)."""

    oldest: datetime | None
    newest: datetime | None
    indexed_to: datetime | None


@dataclass(frozen=True)
class Trace:
    query: str
    webhooks: tuple[WebhookTrace, ...]

    def to_json(self) -> dict[str, Any]:
        """The stable shape of ``trace --json``: times RFC 3339 UTC."""
        return {
            "query": self.query,
            "webhooks": [
                {
                    "message_id": w.message_id,
                    "event": w.event,
                    "order_id": w.order_id,
                    "order_number": w.order_number,
                    "received_at": _iso(w.received_at),
                    "source": w.source,
                    "bytes": w.bytes,
                    "subscribers": [
                        {
                            "name": s.name,
                            "state": str(s.state),
                            "attempts": [
                                {
                                    "at": _iso(a.at),
                                    "attempt": a.attempt,
                                    "outcome": a.outcome,
                                    "status": a.status,
                                    "answer": a.answer,
                                    "error": a.error,
                                    "duration_ms": a.duration_ms,
                                    "source": a.source,
                                    "operator": a.operator,
                                }
                                for a in s.attempts
                            ],
                        }
                        for s in w.subscribers
                    ],
                }
                for w in self.webhooks
            ],
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LedgerReader:
    """The ledger for a long-running reader (the console): opened on first use, kept, and
    opened again after a failure; every answer or a one-line :class:`CommandError`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None

    def _ask(self, question: Callable[[Engine], T]) -> T:
        try:
            try:
                return self._answer(question)
            except DBAPIError as exc:
                # A kept connection the server dropped (a restart): once more, on a fresh
                # one (the pool has let the dead one go), rather than a ping per lookup.
                if not exc.connection_invalidated:
                    raise
            return self._answer(question)
        except SQLAlchemyError as exc:
            self.close()
            raise unreachable(self.url, exc) from None

    def _answer(self, question: Callable[[Engine], T]) -> T:
        if self._engine is None:
            self._engine = open_reader(self.url)
        return question(self._engine)

    async def trace(self, query: str) -> Trace:
        return await asyncio.to_thread(self._ask, lambda engine: trace(engine, query))

    async def arrived(
        self, archive: str, since: datetime, until: datetime
    ) -> set[tuple[str, str]] | None:
        """:func:`arrived`, in a thread."""
        return await asyncio.to_thread(
            self._ask, lambda engine: arrived(engine, archive, since, until)
        )

    async def figures(
        self, names: Sequence[str], deliveries: str, now: datetime
    ) -> dict[str, SubscriberFigures]:
        """:func:`bridge.ledger.figures.subscriber_figures`, in a thread."""
        return await asyncio.to_thread(
            self._ask, lambda engine: subscriber_figures(engine, names, deliveries, now)
        )

    async def audit(self, before: int | None = None) -> AuditPage:
        """:func:`bridge.ledger.audits.audit_page`, in a thread."""
        return await asyncio.to_thread(self._ask, lambda engine: audit_page(engine, before))

    async def changes(self, action: str, deliveries: str) -> Changes:
        """:func:`bridge.ledger.audits.latest_changes`, in a thread."""
        return await asyncio.to_thread(
            self._ask, lambda engine: latest_changes(engine, action, deliveries)
        )

    async def coverage(self, archive: str) -> Coverage:
        """:func:`coverage`, in a thread."""
        return await asyncio.to_thread(self._ask, lambda engine: coverage(engine, archive))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def coverage(engine: Engine, archive: str) -> Coverage:
    """What the ledger holds of the archive stream ``archive`` (two index lookups)."""
    with engine.connect() as connection:
        oldest, newest = connection.execute(
            select(func.min(webhooks.c.received_at), func.max(webhooks.c.received_at))
        ).one()
        return Coverage(
            None if oldest is None else utc(oldest),
            None if newest is None else utc(newest),
            current_at(connection, archive),
        )


def trace_order(url: str, query: str) -> Trace:
    """:func:`trace` on the ledger at ``url``, opened for this one question; a
    :class:`~bridge.errors.CommandError` (one line, no password) when it cannot be read."""
    engine = open_reader(url)
    try:
        return trace(engine, query)
    except SQLAlchemyError as exc:
        raise unreachable(url, exc) from None
    finally:
        engine.dispose()


def trace(engine: Engine, query: str) -> Trace:
    """Every webhook whose order id, order number or message id is ``query``, newest
    first, each with every subscriber's attempts and state (empty when none)."""
    with engine.connect() as connection:
        return trace_on(connection, query)


def trace_on(connection: Connection, query: str) -> Trace:
    found = connection.execute(
        select(webhooks)
        .where(
            or_(
                webhooks.c.message_id == query,
                webhooks.c.order_id == query,
                webhooks.c.order_number == query,
            )
        )
        .order_by(webhooks.c.received_at.desc())
        .limit(MAX_WEBHOOKS)
    ).all()
    ids = [row.message_id for row in found]
    tried = connection.execute(
        select(attempts)
        .where(
            or_(
                attempts.c.message_id.in_([*ids, query]),
                attempts.c.order_id == query,
            )
        )
        .order_by(attempts.c.at, attempts.c.stream_offset)
    ).all()
    known = known_subscribers(connection)
    by_message: dict[str, list[Any]] = {}
    for row in tried:
        by_message.setdefault(row.message_id, []).append(row)
    traces = [_webhook(row, by_message.pop(row.message_id, []), known) for row in found]
    # Attempts of webhooks the ledger has no row for (the archive off, or cut by retention).
    for message_id, rows in by_message.items():
        first = rows[0]
        traces.append(
            WebhookTrace(
                message_id=message_id,
                event=first.event,
                order_id=first.order_id,
                order_number=first.order_number,
                received_at=None,
                source=None,
                bytes=None,
                subscribers=_subscribers(rows, known, lambda _s: True),
            )
        )
    return Trace(query, tuple(traces))


def _webhook(row: Any, tried: list[Any], known: list[KnownSubscriber]) -> WebhookTrace:
    return read_row(
        WebhookTrace,
        row,
        subscribers=_subscribers(
            tried, known, lambda s: s.takes(row.event, row.client_id, row.warehouse_id)
        ),
    )


def _subscribers(
    tried: list[Any], known: list[KnownSubscriber], takes: Any
) -> tuple[SubscriberTrace, ...]:
    per: dict[str, list[Attempt]] = {k.spec.name: [] for k in known}
    for row in tried:
        per.setdefault(row.subscriber, []).append(read_row(Attempt, row))
    specs = {k.spec.name: k.spec for k in known}
    result = []
    for name in sorted(per):
        spec = specs.get(name)
        for_it = spec is None or bool(takes(spec))
        last = per[name][-1].outcome if per[name] else None
        result.append(SubscriberTrace(name, state_of(last, for_it=for_it), tuple(per[name])))
    return tuple(result)


def arrived(
    engine: Engine, archive: str, since: datetime, until: datetime
) -> set[tuple[str, str]] | None:
    """The (event, order id) of every webhook received in ``[since, until)``: what sync
    needs to know arrived (an indexed range on ``received_at``). ``None`` when the ledger
    is not yet current through ``until`` for the stream ``archive`` (its indexer behind or
    stopped): then it cannot say what is missing."""
    with engine.connect() as connection:
        current = current_at(connection, archive)
        if current is None or current < until:
            return None
        rows = connection.execute(
            select(webhooks.c.event, webhooks.c.order_id).where(
                webhooks.c.received_at >= since,
                webhooks.c.received_at < until,
                webhooks.c.order_id.is_not(None),
            )
        )
        return {(event, order_id) for event, order_id in rows}


def undelivered_oldest(engine: Engine, since: dict[str, datetime]) -> dict[str, datetime | None]:
    """Per known subscriber, the receive time of its oldest webhook not yet settled
    (delivered, dead or discarded), looking no further back than ``since[name]`` (or when
    the ledger first knew it); ``None`` when every one is settled."""
    with engine.connect() as connection:
        oldest: dict[str, datetime | None] = {}
        for known in known_subscribers(connection):
            spec = known.spec
            start = max(known.first_seen, since.get(spec.name, known.first_seen))
            settled = exists().where(
                attempts.c.message_id == webhooks.c.message_id,
                attempts.c.subscriber == spec.name,
                attempts.c.outcome.in_([str(o) for o in SETTLED_OUTCOMES]),
            )
            where = [
                webhooks.c.received_at >= start,
                webhooks.c.event.in_(spec.events),
                ~settled,
            ]
            where += _filters(webhooks.c.client_id, spec.clients)
            where += _filters(webhooks.c.warehouse_id, spec.warehouses)
            found = connection.execute(select(func.min(webhooks.c.received_at)).where(and_(*where)))
            value = found.scalar()
            oldest[spec.name] = None if value is None else utc(value)
        return oldest


def _filters(column: Any, values: Iterable[str]) -> list[Any]:
    wanted = list(values)
    return [column.in_(wanted)] if wanted else []
