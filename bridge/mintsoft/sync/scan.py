"""What changed in Mintsoft since the cursors: each page of ``Order/List`` (by
``SinceLastUpdated``) records its new orders (to enrol) and the despatched and cancelled
events it shows; each page of ``TrackingEvents/List`` the delivered events.

A page is recorded in one transaction; the cursor moves only after the last page, to the
newest ``LastUpdated`` seen, but never past now plus :data:`FUTURE_SKEW` (a row stamped in
year 9999 would otherwise leave every later pass looking back only a few minutes from
there). Killed mid-scan, the next scan starts from the old cursor and the repeats are
ignored (orders and events are keyed), so nothing is skipped or doubled. A listing stopped
at its page limit moves the cursor to what it read (lists are oldest first) and the next
pass goes on. A row whose id cannot be stored (beyond a 64-bit integer) is skipped, counted
and recorded (``last_skipped``), never a traceback that stops every pass.
Mintsoft errors propagate as :class:`~bridge.mintsoft.client.MintsoftError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

import orjson

from bridge.core.settings import Settings
from bridge.mintsoft.sync.api import PageLimit, SyncApi
from bridge.mintsoft.sync.clock import MintsoftClock
from bridge.mintsoft.sync.state import PendingEvent, SyncState

log = logging.getLogger("bridge.mintsoft.sync")

ORDERS_CURSOR = "orders"
TRACKING_CURSOR = "tracking"

DESPATCHED_STATUSES = frozenset({4, 5, 6})
"""DESPATCHED, and INVOICED / INVOICEFAILED (whose ExternalName is DESPATCHED)."""
CANCELLED_STATUS = 3


FIRST_RUN_BACK = timedelta(hours=2)
FUTURE_SKEW = timedelta(minutes=5)
"""How far past our own clock a cursor may go (Mintsoft's clock may be a little ahead)."""
_STORABLE = range(-(2**63), 2**63)
"""What SQLite's INTEGER holds."""


def scan_lag(state: SyncState, name: str, now: datetime) -> float:
    """Seconds since the last complete scan of cursor ``name`` started (0 if none yet)."""
    text = state.meta(f"{name}.scanned_at")
    if text is None:
        return 0.0
    return max(0.0, (now - datetime.fromisoformat(text)).total_seconds())


def recovery_id(event: str, order_id: int, identity: str = "") -> str:
    """The message id of a recovered webhook: the first 32 hex digits of
    sha256("reconcile" LF event LF order id LF identity). ``identity`` is empty for
    despatched and cancelled (once per order) and the tracking event's ``ID`` for delivered,
    so recovering the same event again gives the same id."""
    text = f"reconcile\n{event}\n{order_id}\n{identity}"
    return sha256(text.encode()).hexdigest()[:32]


def _int(value: Any) -> int | None:
    """``value`` when it is an integer SQLite can store, else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value in _STORABLE:
        return value
    return None


def _unstorable(row: dict[str, Any], *fields: str) -> str | None:
    """Which of ``fields`` of ``row`` is an integer too large to store, as ``name=value``."""
    for name in fields:
        value = row.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value not in _STORABLE:
            return f"{name}={value}"
    return None


@dataclass
class Scope:
    """``BRIDGE_SYNC_CLIENT_IDS`` / ``BRIDGE_SYNC_WAREHOUSE_IDS``: empty means all."""

    clients: tuple[int, ...] = ()
    warehouses: tuple[int, ...] = ()

    def wants(self, order: dict[str, Any]) -> bool:
        if self.clients and order.get("ClientId") not in self.clients:
            return False
        return not (self.warehouses and order.get("WarehouseId") not in self.warehouses)

    @property
    def filtered(self) -> bool:
        return bool(self.clients or self.warehouses)


@dataclass
class ScanResult:
    pages: int = 0
    rows: int = 0
    new_orders: int = 0
    events: int = 0
    skipped: int = 0


@dataclass
class Scanner:
    settings: Settings
    api: SyncApi
    state: SyncState
    clock: MintsoftClock
    delivered_ids: set[int] | None = None
    on_page: Callable[[int], None] = field(default=lambda rows: None)

    @property
    def scope(self) -> Scope:
        return Scope(self.settings.sync_client_ids, self.settings.sync_warehouse_ids)

    def start_cursors(self, since: datetime) -> None:
        """Move both cursors back to ``since`` (backfill); a later cursor is moved back,
        an earlier one kept."""
        local = self.clock.local(since)
        for name in (ORDERS_CURSOR, TRACKING_CURSOR):
            current = self.state.cursor(name)
            if current is None or self.clock.parse(current) > local:
                self.state.set_cursor(name, self.clock.format(local))

    def _cursor(self, name: str, now: datetime) -> datetime:
        text = self.state.cursor(name)
        if text is None:
            # First run: from (about) now on; history is --backfill's job. FIRST_RUN_BACK
            # covers a BRIDGE_MINTSOFT_TIMEZONE that is wrong by an hour.
            text = self.clock.format(self.clock.local(now) - FIRST_RUN_BACK)
            self.state.set_cursor(name, text)
        return self.clock.parse(text)

    def _advance(self, name: str, cursor: datetime, newest: datetime | None, now: datetime) -> None:
        # Only ever to a time Mintsoft itself stamped: our clock, or a wrong time zone,
        # must never move a cursor past orders Mintsoft has yet to show. Nor past now (and
        # a little skew): a stamp from the future would stick the cursor there.
        if newest is not None:
            newest = min(newest, self.clock.local(now) + FUTURE_SKEW)
        if newest is not None and newest > cursor:
            self.state.set_cursor(name, self.clock.format(newest))
        self.state.set_meta(f"{name}.scanned_at", now.isoformat())

    def _order_events(self, order: dict[str, Any]) -> list[PendingEvent]:
        order_id = _int(order.get("ID"))
        status = _int(order.get("OrderStatusId"))
        if order_id is None or status is None:
            return []
        events = []
        parts, part = _int(order.get("NumberOfParts")), _int(order.get("Part"))
        if parts is not None and parts > 1 and part in (None, 1):
            # Split: the original (part 1) of an order in several parts. Its body comes
            # from GET /api/Order/{id}/Splits when it is recovered.
            happened = self._when(order.get("LastUpdated"))
            events.append(
                PendingEvent(recovery_id("split", order_id), "split", order_id, "", happened, None)
            )
        if status in DESPATCHED_STATUSES:
            event, stamp = "despatched", order.get("DespatchDate") or order.get("LastUpdated")
        elif status == CANCELLED_STATUS:
            event, stamp = "cancelled", order.get("LastUpdated")
        else:
            return events
        happened = self._when(stamp)
        events.append(
            PendingEvent(recovery_id(event, order_id), event, order_id, "", happened, None)
        )
        return events

    def _when(self, stamp: Any) -> float:
        if isinstance(stamp, str) and stamp:
            try:
                return self.clock.to_utc(self.clock.parse(stamp)).timestamp()
            except ValueError:
                pass
        return datetime.now(UTC).timestamp()

    def _skip(self, rows: list[dict[str, Any]], what: str, *fields: str) -> int:
        """Record each row of ``rows`` with an id that cannot be stored; how many."""
        skipped = 0
        for row in rows:
            bad = _unstorable(row, *fields)
            if bad is not None:
                skipped += 1
                note = f"{what} with {bad} (does not fit a 64-bit integer)"
                log.warning("sync: skipped %s", note)
                self.state.set_meta("last_skipped", f"{datetime.now(UTC).isoformat()} {note}")
        return skipped

    def _newest(self, rows: list[dict[str, Any]], newest: datetime | None) -> datetime | None:
        for row in rows:
            stamp = row.get("LastUpdated")
            if isinstance(stamp, str):
                try:
                    when = self.clock.parse(stamp)
                except ValueError:
                    continue
                if newest is None or when > newest:
                    newest = when
        return newest

    async def scan_orders(self) -> ScanResult:
        now = datetime.now(UTC)
        scope = self.scope
        one_client = scope.clients[0] if len(scope.clients) == 1 else None
        one_warehouse = scope.warehouses[0] if len(scope.warehouses) == 1 else None
        return await self._scan(
            ORDERS_CURSOR,
            now,
            lambda since: self.api.order_pages(since, one_client, one_warehouse),
            lambda rows, result: self._order_page(rows, scope, result),
        )

    def _order_page(self, rows: list[dict[str, Any]], scope: Scope, result: ScanResult) -> int:
        fields = ("ID", "ClientId", "WarehouseId", "OrderStatusId")
        result.skipped += self._skip(rows, "an order", *fields)
        stored = [r for r in rows if _unstorable(r, *fields) is None]
        wanted = [r for r in stored if scope.wants(r) and _int(r.get("ID")) is not None]
        events = [e for r in wanted for e in self._order_events(r)]
        ids = [(int(r["ID"]), _int(r.get("ClientId")), _int(r.get("WarehouseId"))) for r in wanted]
        result.new_orders += self.state.add_orders(ids, events)
        self.on_page(len(rows))
        return len(events)

    async def _delivered_statuses(self) -> set[int]:
        if self.delivered_ids is None:
            # Mintsoft does not document which tracking status is "delivered": take it by
            # name from its own list, once per process.
            statuses = await self.api.tracking_statuses()
            self.delivered_ids = {
                int(s["ID"])
                for s in statuses
                if _int(s.get("ID")) is not None
                and re.sub(r"[^A-Z]", "", str(s.get("Name", "")).upper()) == "DELIVERED"
            }
        return self.delivered_ids

    async def scan_tracking(self) -> ScanResult:
        now = datetime.now(UTC)
        delivered = await self._delivered_statuses()
        known = self.state.known_orders() if self.scope.filtered else None
        return await self._scan(
            TRACKING_CURSOR,
            now,
            self.api.tracking_pages,
            lambda rows, result: self._tracking_page(rows, delivered, known, result),
        )

    def _tracking_page(
        self,
        rows: list[dict[str, Any]],
        delivered: set[int],
        known: set[int] | None,
        result: ScanResult,
    ) -> int:
        result.skipped += self._skip(rows, "a tracking event", "ID", "TrackingStatusId")
        events = []
        for row in rows:
            shipment = row.get("OrderShipment")
            order_id = _int(shipment.get("OrderId")) if isinstance(shipment, dict) else None
            event_id = _int(row.get("ID"))
            if order_id is None or event_id is None:
                continue
            if _int(row.get("TrackingStatusId")) not in delivered:
                continue
            if known is not None and order_id not in known:
                continue
            happened = self._when(row.get("CourierTimeStamp") or row.get("LastUpdated"))
            identity = str(event_id)
            events.append(
                PendingEvent(
                    recovery_id("delivered", order_id, identity),
                    "delivered",
                    order_id,
                    identity,
                    happened,
                    orjson.dumps([row]),  # the delivered webhook's body: a list of events
                )
            )
        self.state.add_events(events)
        return len(events)

    async def _scan(
        self,
        name: str,
        now: datetime,
        pages: Callable[[str], AsyncIterator[list[dict[str, Any]]]],
        read: Callable[[list[dict[str, Any]], ScanResult], int],
    ) -> ScanResult:
        """Read the pages Mintsoft gives from cursor ``name`` on, ``read`` storing each page
        (and saying how many events it found); the cursor then advances to the newest row
        read, also when the page limit cuts the scan short."""
        cursor = self._cursor(name, now)
        since = self.clock.format(self.clock.since(cursor, now))
        result = ScanResult()
        newest: datetime | None = None
        try:
            async for rows in pages(since):
                result.events += read(rows, result)
                result.pages += 1
                result.rows += len(rows)
                newest = self._newest(rows, newest)
        except PageLimit:
            self._advance(name, cursor, newest, now)
            raise
        self._advance(name, cursor, newest, now)
        return result
