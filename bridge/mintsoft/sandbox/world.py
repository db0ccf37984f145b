"""The sandbox's Mintsoft: orders that change status over time, their tracking events and
splits, their connect actions, and the webhook calls Mintsoft makes when an order changes.

Guarantees: an order's documents have the shape of the packaged example bodies
(``bridge/fixtures/``), with Mintsoft's offset-less Europe/London times (2, 3 or 7 fraction
digits, as Mintsoft sends them). Each status change (despatched, cancelled), each delivered
tracking event and each split POSTs the webhook body to the URL the order's connect action
holds for that event (``ExtraCode1/2/3/5``, with ``ExtraCode4`` as the Authorization header),
once: a dropped or failed call is never retried, as with Mintsoft. An ASN (stock arriving)
booked in POSTs ``GET /api/ASN/{id}``'s body to its connect action's ``ExtraCode1``
(contract section 11) the same way. Only loopback URLs are
called (this is a local stand-in); a call to another host is recorded as not made.
Every call's outcome is a :class:`Sent`, kept in ``sent`` and passed to ``on_sent``.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from bridge.core.contract import ASN_BOOKED_IN, ASN_EXTRA_CODE, EXTRA_CODES
from bridge.mintsoft.simulate import fixture, with_order_id
from bridge.mintsoft.sync.clock import MintsoftClock
from bridge.mintsoft.urls import is_loopback

ZONE = "Europe/London"
CLOCK = MintsoftClock(ZONE)
CALL_TIMEOUT = 10.0

CANCELLED = 3
DESPATCHED = 4
BOOKED_IN = 5
DELIVERED_TRACKING = 5
TRACKING_STATUSES = [
    {"ID": 1, "Name": "Collected"},
    {"ID": 2, "Name": "In Transit"},
    {"ID": 3, "Name": "Out For Delivery"},
    {"ID": 4, "Name": "Delivery Failed"},
    {"ID": DELIVERED_TRACKING, "Name": "Delivered"},
]


def local_now() -> datetime:
    """Now as Mintsoft stamps it: London wall-clock time, no offset."""
    return CLOCK.local(datetime.now(UTC))


def stamp(when: datetime, n: int) -> str:
    """Mintsoft's offset-less form, with a fraction of varying length (as it sends)."""
    base = when.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{when.microsecond:06d}"
    return base + [f".{fraction[:3]}", f".{fraction[:2]}", f".{fraction}1"][n % 3]


@dataclass
class Order:
    """One Mintsoft order: ``status`` is its ``OrderStatusId``, ``actions`` its connect
    actions (what ``PUT .../ConnectActions`` last put)."""

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
        """``GET /api/Order/{id}``: the example despatched body, made this order's."""
        n = self.id
        body: dict[str, Any] = with_order_id("despatched", _template("despatched"), n)
        created = stamp(self.order_date, n)
        for item in body.get("OrderItems") or ():
            item["LastUpdated"] = created
        if self.despatch_date is None:
            body |= {"TrackingNumber": None, "TrackingURL": None, "DespatchedByUser": None}
        return body | {
            "ClientId": self.client_id,
            "CLIENT_CODE": f"C{self.client_id}",
            "ExternalOrderReference": f"EXT-{n}",
            "Channel": body["Channel"] | {"ClientId": self.client_id},
            "OrderDate": created,
            "DespatchDate": stamp(self.despatch_date, n) if self.despatch_date else None,
            "OrderStatusId": self.status,
            "WarehouseId": self.warehouse_id,
            "WAREHOUSE_CODE": f"W{self.warehouse_id}",
            "NumberOfParts": self.parts,
            "Part": self.part,
            "LastUpdated": stamp(self.last_updated, n),
            "LastUpdatedByUser": "sandbox",
        }


@dataclass
class Asn:
    """An advance shipping notice: stock on its way to a warehouse, booked in on arrival."""

    id: int
    client_id: int
    warehouse_id: int
    status: int = 1
    booked_in: datetime | None = None
    last_updated: datetime = field(default_factory=local_now)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """``GET /api/ASN/{id}``: the example asn-booked-in body, made this ASN's."""
        n = self.id
        body: dict[str, Any] = copy.deepcopy(_template(ASN_BOOKED_IN))
        for item in body.get("Items") or ():
            item["ASNId"] = n
        status = body["ASNStatus"] | {"ID": self.status}
        if not self.booked_in:
            status["Name"] = "Due In"
        return body | {
            "ID": n,
            "ClientId": self.client_id,
            "WarehouseId": self.warehouse_id,
            "POReference": f"PO-{n}",
            "ASNStatusId": self.status,
            "ASNStatus": status,
            "BookedInDate": stamp(self.booked_in, n) if self.booked_in else None,
            "LastUpdated": stamp(self.last_updated, n),
            "LastUpdatedByUser": "sandbox",
        }


def url_for(actions: list[dict[str, Any]], field: str) -> tuple[str, str | None] | None:
    """The URL in ``field`` of the first connect action holding one, with its
    Authorization value (``ExtraCode4``)."""
    for action in actions:
        url = action.get(field)
        if isinstance(url, str) and url:
            authorization = action.get("ExtraCode4")
            return url, authorization if isinstance(authorization, str) else None
    return None


_TEMPLATES: dict[str, Any] = {}


def _template(event: str) -> Any:
    if event not in _TEMPLATES:
        _TEMPLATES[event] = fixture(event)
    return _TEMPLATES[event]


@dataclass(frozen=True)
class Sent:
    """One webhook Mintsoft would send: ``status`` is the bridge's answer (None when the
    call was not made or failed); ``outcome`` says what happened in words, without the URL's
    query (which may hold the bridge's key)."""

    event: str
    order_id: int  # the ASN's id for asn-booked-in
    dropped: bool
    status: int | None = None
    outcome: str = ""


class World:
    """Orders and what happens to them; ``async with World()`` (or ``open``/``close``)
    holds the HTTP session the webhook calls use."""

    def __init__(self, drop: float = 0.0, seed: int = 7, first_id: int = 1000) -> None:
        self.drop = drop
        self.random = random.Random(seed)
        self.orders: dict[int, Order] = {}
        self.asns: dict[int, Asn] = {}
        self.tracking: list[dict[str, Any]] = []
        self.splits: dict[int, list[dict[str, Any]]] = {}
        self.next_id = first_id
        self.sent: list[Sent] = []
        self.on_sent: Callable[[Sent], None] = lambda sent: None
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # the world changing
    def create(self, client_id: int = 12, warehouse_id: int = 1) -> Order:
        self.next_id += 1
        order = Order(self.next_id, client_id, warehouse_id)
        self.orders[order.id] = order
        return order

    def touch(self, order: Order) -> None:
        order.last_updated = local_now()

    async def despatch(self, order: Order, status: int = DESPATCHED) -> None:
        order.status = status
        order.despatch_date = local_now()
        self.touch(order)
        await self._send("despatched", order, order.document())

    async def cancel(self, order: Order) -> None:
        order.status = CANCELLED
        self.touch(order)
        await self._send("cancelled", order, order.document())

    async def deliver(self, order: Order) -> None:
        n = len(self.tracking) + 9000
        now = local_now()
        [example] = [e for e in _template("delivered") if e["TrackingStatusId"] == 5]
        shipment = 7000 + order.id
        event = example | {
            "ID": n,
            "OrderShipmentId": shipment,
            "OrderShipment": example["OrderShipment"]
            | {"ID": shipment, "OrderId": order.id, "Number": f"TRK{n}"},
            "TrackingStatusId": DELIVERED_TRACKING,
            "CourierTimeStamp": stamp(now, n),
            "LastUpdated": stamp(now, n),
            "LastUpdatedByUser": "SYSTEM",
            "_at": now,
        }
        self.tracking.append(event)
        await self._send("delivered", order, [public(event)])

    async def split(self, order: Order) -> Order:
        """Split ``order`` in two: a new order (part 2) takes some of its lines."""
        child = self.create(order.client_id, order.warehouse_id)
        order.parts = child.parts = 2
        child.part = 2
        self.touch(order)
        item = {
            "Order": order.document(),
            "SplitOrder": child.document(),
            "OrderId": order.id,
            "SplitOrderId": child.id,
            "ID": 300 + len(self.splits),
            "LastUpdated": stamp(local_now(), order.id),
            "LastUpdatedByUser": "SYSTEM",
        }
        self.splits.setdefault(order.id, []).append(item)
        await self._send("split", order, [item])
        return child

    def create_asn(self, client_id: int = 12, warehouse_id: int = 1) -> Asn:
        self.next_id += 1
        asn = Asn(self.next_id, client_id, warehouse_id)
        self.asns[asn.id] = asn
        return asn

    async def book_in(self, asn: Asn) -> None:
        asn.status = BOOKED_IN
        asn.booked_in = asn.last_updated = local_now()
        target = url_for(asn.actions, ASN_EXTRA_CODE)
        await self._call(ASN_BOOKED_IN, asn.id, target, asn.document())

    async def _send(self, event: str, order: Order, body: Any) -> None:
        await self._call(event, order.id, url_for(order.actions, EXTRA_CODES[event]), body)

    async def _call(
        self, event: str, about: int, target: tuple[str, str | None] | None, body: Any
    ) -> None:
        if target is None:
            return  # nobody registered it for the event: Mintsoft calls nothing
        url, authorization = target
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if not is_loopback(parts.hostname):
            self._record(Sent(event, about, False, None, f"not called ({shown} is not local)"))
            return
        if self.random.random() < self.drop:
            self._record(Sent(event, about, True, None, f"dropped (never called {shown})"))
            return
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        assert self._session is not None, "call World.open() first"
        try:
            async with self._session.post(
                url, data=orjson.dumps(body), headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = f"called {shown}: failed ({type(exc).__name__}), not retried"
            self._record(Sent(event, about, False, None, outcome))
            return
        self._record(Sent(event, about, False, status, f"called {shown}: {status}"))

    def _record(self, sent: Sent) -> None:
        self.sent.append(sent)
        self.on_sent(sent)


def public(event: dict[str, Any]) -> dict[str, Any]:
    """A tracking event as the API shows it (without the world's own ``_`` fields)."""
    return {k: v for k, v in event.items() if not k.startswith("_")}
