"""Where the console reads what it did not make: the archive library (``bridge.archive``,
see its ``find``, ``replay`` and ``archive_status``); the sync's figures come from the sync
module (:func:`bridge.mintsoft.sync.status.sync_overview`, read-only); each subscriber's
delivery figures from the ledger (:func:`ledger_figures`, read-only: last delivery, last
error, per minute, oldest undelivered), and operators' latest changes of one kind from its
audit records (:func:`ledger_changes`).

The archive is optional: a build without the archive package or an exchange without an
archive stream makes the pages say so, never fail. The archive summary is cached
(:class:`ArchiveSummaryCache`): reading it writes to the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bridge.amqp.topology import ArchiveRetention
from bridge.console.broker import ConsoleBroker
from bridge.console.looked import Looked, look
from bridge.core.audit import Action
from bridge.core.records import deliveries_stream
from bridge.errors import CommandError
from bridge.ledger.audits import Changes
from bridge.ledger.figures import SubscriberFigures
from bridge.ledger.queries import LedgerReader

T = TypeVar("T")


@dataclass(frozen=True)
class ArchiveSummary:
    available: bool  # the archive code is part of this build
    enabled: bool  # the stream exists
    messages: int = 0
    oldest: Any = None
    newest: Any = None
    max_age: str | None = None
    max_bytes: int | None = None
    error: str | None = None


FROM_STATUS = ("enabled", "messages", "oldest", "newest", "max_age", "max_bytes")
"""The summary's fields that are the archive status's own, under the same names."""


async def archive_summary(
    broker: ConsoleBroker, exchange: str, retention: ArchiveRetention | None = None
) -> ArchiveSummary:
    try:
        from bridge.archive import status as archive_status
    except ImportError:
        return ArchiveSummary(available=False, enabled=False)
    try:
        connection = await broker.connection()
        status = await archive_status.status_on(connection, exchange, retention)
    except CommandError as exc:
        return ArchiveSummary(available=True, enabled=False, error=str(exc))
    return ArchiveSummary(available=True, **{name: getattr(status, name) for name in FROM_STATUS})


ARCHIVE_CACHE_SECONDS = 60.0
"""How long the overview shows one archive summary: reading one opens channels, writes
end markers into the stream and may scan it, too much for every 5 s refresh of every tab,
while its figures (size, oldest, newest) change slowly."""


class ArchiveSummaryCache:
    """One archive summary per console process, read lazily: the first refresh after it is
    ``ttl`` seconds old reads a new one, and concurrent refreshes wait for that one read
    instead of each starting their own. A read that raises is not kept (the next refresh
    tries again); a summary that reports an error is kept like any other."""

    def __init__(
        self, ttl: float = ARCHIVE_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = asyncio.Lock()
        self._key: tuple[object, ...] | None = None
        self._value: ArchiveSummary | None = None
        self._read_at = 0.0

    def _fresh(self, key: tuple[object, ...]) -> ArchiveSummary | None:
        if self._key == key and self.clock() - self._read_at < self.ttl:
            return self._value
        return None

    async def get(
        self, broker: ConsoleBroker, exchange: str, retention: ArchiveRetention | None = None
    ) -> ArchiveSummary:
        key = (exchange, retention)
        async with self._lock:
            cached = self._fresh(key)
            if cached is not None:
                return cached
            value = await archive_summary(broker, exchange, retention)
            self._key, self._value, self._read_at = key, value, self.clock()
            return value


def archive_available() -> bool:
    try:
        import bridge.archive.reader  # noqa: F401
    except ImportError:
        return False
    return True


LedgerFigures = Looked[dict[str, SubscriberFigures]]


async def ledger_figures(
    ledger: LedgerReader | None, names: Sequence[str], exchange: str
) -> LedgerFigures | None:
    """Each subscriber's delivery figures from the ledger (indexed lookups, in a thread);
    a ledger that did not answer is a could-not-look reason, and ``None`` means there is no
    ledger (``BRIDGE_LEDGER_URL`` empty): the pages then say where the figures would come
    from, never "0"."""
    if ledger is None:
        return None
    now = datetime.now(UTC)
    return await look(_bounded(ledger.figures(list(names), deliveries_stream(exchange), now)))


async def ledger_changes(
    ledger: LedgerReader | None, action: Action, exchange: str
) -> Looked[Changes] | None:
    """The latest ``action`` changes the ledger's audit records hold (console and command
    line), newest first; ``None`` without a ledger, a could-not-look reason when it did not
    answer."""
    if ledger is None:
        return None
    return await look(_bounded(ledger.changes(str(action), deliveries_stream(exchange))))


LEDGER_WAIT = 8.0
"""Seconds a page waits for the ledger's figures before saying it could not look."""


async def _bounded(read: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(LEDGER_WAIT):
            return await read
    except TimeoutError:
        raise CommandError(
            f"the ledger did not answer within {LEDGER_WAIT:g} s: check that its database is "
            "up (BRIDGE_LEDGER_URL)"
        ) from None
