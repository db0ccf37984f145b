"""A faithful fake of the Mintsoft API for sync tests, served by aiohttp on 127.0.0.1 in the
test's own event loop, with orders that change over time and a webhook sender.

What it models (see /work/notes/mintsoft-api.md):
- ``GET /api/Order/List``: a bare JSON array; ``PageNo`` from 1; ``Limit`` clamped to 100
  (default 100); ``SinceLastUpdated`` / ``SinceDate`` inclusive on ``LastUpdated`` /
  ``OrderDate``; ``ClientId``, ``WarehouseId``, ``OrderStatusId``; newest first unless
  ``SortOldestFirst=true``; the page past the end is ``[]``.
- Date-times without offset, local to Europe/London, with 2, 3 or 7 fraction digits; a query
  date with ``Z`` or an offset is converted to local time (the .NET binding does that).
- ``GET /api/Order/{id}`` (404 if unknown), ``GET``/``PUT /api/Order/{id}/ConnectActions``
  (a list; a PUT replaces it and answers a ToolkitResult), ``GET /api/Order/{id}/Splits``,
  ``GET /api/Order/Shipments/TrackingEvents/List`` (``Limit`` up to 500) and ``/Statuses``.
- ``ms-apikey`` required (401 otherwise); faults: ``outage(seconds, status)`` answers every
  call with 429 + ``Retry-After`` or 503 for that long; ``page_delay`` slows list pages.
- Each status change (despatched, cancelled) and each delivered tracking event POSTs the
  webhook to the URL the order's connect action holds (with its ExtraCode4 as Authorization),
  dropping a chosen share at random (seeded), the way a failed delivery is never retried.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
from aiohttp import web

from tests.support.local_app import serve_locally

LONDON = ZoneInfo("Europe/London")
TRACKING_STATUSES = [
    {"ID": 1, "Name": "Collected"},
    {"ID": 2, "Name": "In Transit"},
    {"ID": 3, "Name": "Out For Delivery"},
    {"ID": 4, "Name": "Delivery Failed"},
    {"ID": 5, "Name": "Delivered"},
]
DELIVERED = 5
EVENT_FIELD = {
    "despatched": "ExtraCode1",
    "cancelled": "ExtraCode2",
    "delivered": "ExtraCode3",
    "split": "ExtraCode5",
}


def local_now() -> datetime:
    return datetime.now(UTC).astimezone(LONDON).replace(tzinfo=None)


def stamp(when: datetime, n: int) -> str:
    """Mintsoft's offset-less form, with a fraction of varying length (as it sends)."""
    base = when.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{when.microsecond:06d}"
    return base + [f".{fraction[:3]}", f".{fraction[:2]}", f".{fraction}1"][n % 3]


def parse_query_time(text: str) -> datetime:
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip().replace("Z", "+00:00"))
    when = datetime.fromisoformat(text)
    if when.tzinfo is not None:
        when = when.astimezone(LONDON).replace(tzinfo=None)
    return when


@dataclass
class FakeOrder:
    id: int
    client_id: int
    warehouse_id: int
    status: int = 1
    order_date: datetime = field(default_factory=local_now)
    last_updated: datetime = field(default_factory=local_now)
    despatch_date: datetime | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    parts: int = 1
    part: int = 1

    def document(self) -> dict[str, Any]:
        n = self.id
        return {
            "ClientId": self.client_id,
            "CLIENT_CODE": f"C{self.client_id}",
            "OrderNumber": f"SO-{n}",
            "ExternalOrderReference": f"EXT-{n}",
            "OrderDate": stamp(self.order_date, n),
            "DespatchDate": stamp(self.despatch_date, n) if self.despatch_date else None,
            "FirstName": "Jane",
            "LastName": "Smith",
            "Country": {"Name": "United Kingdom", "Code": "GB", "ID": 1},
            "Channel": {"Name": "Shopify", "ID": 3, "ClientId": self.client_id},
            "OrderStatusId": self.status,
            "WarehouseId": self.warehouse_id,
            "WAREHOUSE_CODE": f"W{self.warehouse_id}",
            "NumberOfParts": self.parts,
            "Part": self.part,
            "OrderItems": None,
            "ID": n,
            "LastUpdated": stamp(self.last_updated, n),
            "LastUpdatedByUser": "api",
        }


@dataclass
class Sent:
    event: str
    order_id: int
    dropped: bool
    status: int | None = None


class MintsoftWorld:
    """``await world.start()``; create and change orders; ``await world.close()``."""

    def __init__(self, api_key: str = "ms-key-1", drop: float = 0.0, seed: int = 7) -> None:
        self.api_key = api_key
        self.drop = drop
        self.random = random.Random(seed)
        self.orders: dict[int, FakeOrder] = {}
        self.tracking: list[dict[str, Any]] = []
        self.splits: dict[int, list[dict[str, Any]]] = {}
        self.next_id = 1000
        self.url = ""
        self.calls: Counter[str] = Counter()  # by route ("GET Order/List", ...)
        self.puts: Counter[int] = Counter()  # PUT ConnectActions by order
        self.answers: Counter[int] = Counter()
        self.sent: list[Sent] = []
        self.page_delay = 0.0
        self._outage_until = 0.0
        self._outage_status = 429
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # lifecycle
    async def start(self) -> str:
        self._runner, self.url = await serve_locally(self._handle)
        self._session = aiohttp.ClientSession()
        return self.url

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # the world changing
    def create(self, client_id: int = 12, warehouse_id: int = 1) -> FakeOrder:
        self.next_id += 1
        order = FakeOrder(self.next_id, client_id, warehouse_id)
        self.orders[order.id] = order
        return order

    def touch(self, order: FakeOrder) -> None:
        order.last_updated = local_now()

    async def despatch(self, order: FakeOrder, status: int = 4) -> None:
        order.status = status
        order.despatch_date = local_now()
        self.touch(order)
        await self._send("despatched", order, order.document())

    async def cancel(self, order: FakeOrder) -> None:
        order.status = 3
        self.touch(order)
        await self._send("cancelled", order, order.document())

    async def deliver(self, order: FakeOrder) -> None:
        n = len(self.tracking) + 9000
        now = local_now()
        event = {
            "ID": n,
            "OrderShipmentId": 7000 + order.id,
            "OrderShipment": {"ID": 7000 + order.id, "OrderId": order.id, "Number": f"TRK{n}"},
            "TrackingStatusId": DELIVERED,
            "CourierCustomerDescription": "Delivered",
            "CourierExternalDescription": "Delivered",
            "CourierTimeStamp": stamp(now, n),
            "LastUpdated": stamp(now, n),
            "LastUpdatedByUser": "SYSTEM",
            "_at": now,
        }
        self.tracking.append(event)
        await self._send("delivered", order, [_public(event)])

    async def split(self, order: FakeOrder) -> FakeOrder:
        """Split ``order`` in two: a new order (part 2) takes some of its lines."""
        child = self.create(order.client_id, order.warehouse_id)
        order.parts = child.parts = 2
        child.part = 2
        self.touch(order)
        now = local_now()
        item = {
            "Order": order.document(),
            "SplitOrder": child.document(),
            "OrderId": order.id,
            "SplitOrderId": child.id,
            "ID": 300 + len(self.splits),
            "LastUpdated": stamp(now, order.id),
            "LastUpdatedByUser": "SYSTEM",
        }
        self.splits.setdefault(order.id, []).append(item)
        await self._send("split", order, [item])
        return child

    def outage(self, seconds: float, status: int = 429) -> None:
        self._outage_until = asyncio.get_running_loop().time() + seconds
        self._outage_status = status

    async def _send(self, event: str, order: FakeOrder, body: Any) -> None:
        action = next((a for a in order.actions if a.get(EVENT_FIELD[event])), None)
        if action is None:
            return  # nobody registered this order: Mintsoft calls nothing
        url = str(action[EVENT_FIELD[event]])
        if not url.startswith("http://127.0.0.1:"):
            self.sent.append(Sent(event, order.id, False, None))  # another system's URL
            return
        if self.random.random() < self.drop:
            self.sent.append(Sent(event, order.id, True))
            return
        headers = {"Content-Type": "application/json"}
        if action.get("ExtraCode4"):
            headers["Authorization"] = action["ExtraCode4"]
        assert self._session is not None
        try:
            async with self._session.post(
                url, data=orjson.dumps(body), headers=headers
            ) as response:
                self.sent.append(Sent(event, order.id, False, response.status))
        except aiohttp.ClientError:
            self.sent.append(Sent(event, order.id, False, None))

    # the API
    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        shape = re.sub(r"/\d+", "/{id}", path.removeprefix("/api/"))
        route = f"{request.method} {shape}"
        self.calls[route] += 1
        if asyncio.get_running_loop().time() < self._outage_until:
            return self._answer(
                self._outage_status, {"Message": "Too many requests"}, {"Retry-After": "1"}
            )
        if request.headers.get("ms-apikey") != self.api_key:
            return self._answer(401, {"Message": "Authorization has been denied for this request."})
        q = request.query
        if request.method == "GET" and path == "/api/Order/List":
            if self.page_delay:
                await asyncio.sleep(self.page_delay)
            return self._answer(200, self._list(q))
        if request.method == "GET" and path == "/api/Order/Shipments/TrackingEvents/List":
            return self._answer(200, self._tracking(q))
        if request.method == "GET" and path == "/api/Order/Shipments/TrackingEvents/Statuses":
            return self._answer(200, TRACKING_STATUSES)
        match = re.fullmatch(r"/api/Order/(\d+)(/ConnectActions|/Splits)?", path)
        if match is None or int(match.group(1)) not in self.orders:
            return self._answer(404, {"Message": f"No HTTP resource was found for '{path}'"})
        order = self.orders[int(match.group(1))]
        tail = match.group(2)
        if request.method == "GET" and tail is None:
            return self._answer(200, order.document())
        if request.method == "GET" and tail == "/Splits":
            return self._answer(200, self.splits.get(order.id, []))
        if tail == "/ConnectActions" and request.method == "GET":
            return self._answer(200, [a | {"OrderId": order.id} for a in order.actions])
        if tail == "/ConnectActions" and request.method == "PUT":
            body = await request.json()
            self.puts[order.id] += 1
            order.actions = [body | {"ID": 500000 + order.id}]
            return self._answer(
                200,
                {
                    "ID": order.id,
                    "Success": True,
                    "Message": None,
                    "WarningMessage": None,
                    "AllocatedFromReplen": False,
                },
            )
        return self._answer(405, {"Message": "The requested resource does not support it"})

    def _page(self, rows: list[Any], q: Any, largest: int) -> list[Any]:
        limit = min(int(q.get("Limit", largest)), largest)
        page = int(q.get("PageNo", 1))
        return rows[(page - 1) * limit : page * limit]

    def _list(self, q: Any) -> list[dict[str, Any]]:
        rows = list(self.orders.values())
        if "SinceLastUpdated" in q:
            since = parse_query_time(q["SinceLastUpdated"])
            rows = [o for o in rows if o.last_updated >= since]
        if "SinceDate" in q:
            since = parse_query_time(q["SinceDate"])
            rows = [o for o in rows if o.order_date >= since]
        for name, attr in (
            ("ClientId", "client_id"),
            ("WarehouseId", "warehouse_id"),
            ("OrderStatusId", "status"),
        ):
            if name in q:
                rows = [o for o in rows if getattr(o, attr) == int(q[name])]
        oldest_first = q.get("SortOldestFirst", "false").lower() == "true"
        rows.sort(key=lambda o: (o.last_updated, o.id), reverse=not oldest_first)
        return [o.document() for o in self._page(rows, q, 100)]

    def _tracking(self, q: Any) -> list[dict[str, Any]]:
        rows = list(self.tracking)
        if "SinceLastUpdated" in q:
            since = parse_query_time(q["SinceLastUpdated"])
            rows = [e for e in rows if e["_at"] >= since]
        if "TrackingStatusId" in q:
            rows = [e for e in rows if e["TrackingStatusId"] == int(q["TrackingStatusId"])]
        return [_public(e) for e in self._page(rows, q, 500)]

    def _answer(
        self, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.answers[status] += 1
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=headers or {},
        )


def _public(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if not k.startswith("_")}
