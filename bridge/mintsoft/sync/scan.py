"""What changed in Mintsoft since the cursors: each page of ``Order/List`` (by
``SinceLastUpdated``) records its new orders (to enrol) and the despatched and cancelled
events it shows; each page of ``TrackingEvents/List`` the delivered events.

A page is recorded in one transaction; the cursor moves only after the last page, to the
newest ``LastUpdated`` seen. Killed mid-scan, the next scan starts from the old cursor and
the repeats are ignored (orders and events are keyed), so nothing is skipped or doubled.
Mintsoft errors propagate as :class:`~bridge.mintsoft.client.MintsoftError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

import orjson

from bridge.core.settings import Settings
from bridge.mintsoft.sync.api import SyncApi
from bridge.mintsoft.sync.clock import MintsoftClock
from bridge.mintsoft.sync.state import PendingEvent, SyncState

log = logging.getLogger("bridge.mintsoft.sync")

ORDERS_CURSOR = "orders"
TRACKING_CURSOR = "tracking"

DESPATCHED_STATUSES = frozenset({4, 5, 6})
"""DESPATCHED, and INVOICED / INVOICEFAILED (whose ExternalName is DESPATCHED)."""
CANCELLED_STATUS = 3


FIRST_RUN_BACK = timedelta(hours=2)


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
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
        # must never move a cursor past orders Mintsoft has yet to show.
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
        cursor = self._cursor(ORDERS_CURSOR, now)
        since = self.clock.format(self.clock.since(cursor, now))
        scope = self.scope
        one_client = scope.clients[0] if len(scope.clients) == 1 else None
        one_warehouse = scope.warehouses[0] if len(scope.warehouses) == 1 else None
        result = ScanResult()
        newest: datetime | None = None
        async for rows in self.api.order_pages(since, one_client, one_warehouse):
            wanted = [r for r in rows if scope.wants(r) and _int(r.get("ID")) is not None]
            events = [e for r in wanted for e in self._order_events(r)]
            ids = [
                (int(r["ID"]), _int(r.get("ClientId")), _int(r.get("WarehouseId"))) for r in wanted
            ]
            result.new_orders += self.state.add_orders(ids, events)
            result.pages += 1
            result.rows += len(rows)
            result.events += len(events)
            newest = self._newest(rows, newest)
            self.on_page(len(rows))
        self._advance(ORDERS_CURSOR, cursor, newest, now)
        return result

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
        cursor = self._cursor(TRACKING_CURSOR, now)
        since = self.clock.format(self.clock.since(cursor, now))
        known = self.state.known_orders() if self.scope.filtered else None
        result = ScanResult()
        newest: datetime | None = None
        async for rows in self.api.tracking_pages(since):
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
            result.pages += 1
            result.rows += len(rows)
            result.events += len(events)
            newest = self._newest(rows, newest)
        self._advance(TRACKING_CURSOR, cursor, newest, now)
        return result
