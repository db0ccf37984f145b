"""The sandbox's HTTP API: the Mintsoft endpoints ``connect-actions``, ``sync`` and
``doctor`` call, answered from a :class:`~bridge.mintsoft.sandbox.world.World`.

What it models (as Mintsoft behaves):
- ``GET /`` answers 200 without a key (a readiness probe; Mintsoft's root has no API).
- ``POST /api/Auth`` with ``{"Username", "Password"}`` answers a key as a JSON string (400
  for a wrong login); every other call needs that key, or the configured one, in
  ``ms-apikey`` (401 otherwise). With no key configured any non-empty key is accepted.
- ``GET /api/Order/List``: a bare JSON array; ``PageNo`` from 1; ``Limit`` clamped to 100
  (default 100); ``SinceLastUpdated`` / ``SinceDate`` inclusive on ``LastUpdated`` /
  ``OrderDate``; ``ClientId``, ``WarehouseId``, ``OrderStatusId``; newest first unless
  ``SortOldestFirst=true``; the page past the end is ``[]``. A query time with ``Z`` or an
  offset is converted to London time (the .NET binding does that).
- ``GET /api/Order/{id}`` (404 if unknown), ``GET``/``PUT /api/Order/{id}/ConnectActions``
  (a list; a PUT replaces it and answers a ToolkitResult), ``GET /api/Order/{id}/Splits``;
  the same for an ASN: ``GET /api/ASN/{id}``, ``GET``/``PUT /api/ASN/{id}/ConnectActions``;
  ``GET /api/Order/Shipments/TrackingEvents/List`` (``Limit`` up to 500) and ``/Statuses``.
- Too many calls: above ``rate`` requests a second (a burst of twice that) a call answers
  429 with ``Retry-After: 1``. ``outage(seconds, status)`` answers every call with 429 or
  503 for that long; ``page_delay`` slows list pages.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from bridge.mintsoft.sandbox.world import CLOCK, TRACKING_STATUSES, Asn, Order, World, public

ORDER_PAGE = 100
TRACKING_PAGE = 500
DENIED = "Authorization has been denied for this request."


@dataclass(eq=False)
class SandboxApi:
    """``handle`` answers any request; :func:`listen` serves it on a port."""

    world: World
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    rate: float | None = None
    issued: set[str] = field(default_factory=set, init=False)
    calls: Counter[str] = field(default_factory=Counter, init=False)  # by route ("GET Order/List")
    puts: Counter[int] = field(default_factory=Counter, init=False)  # PUT ConnectActions by order
    answers: Counter[int] = field(default_factory=Counter, init=False)
    page_delay: float = field(default=0.0, init=False)
    outage_until: float = field(default=0.0, init=False)
    _outage_status: int = field(default=429, init=False)
    _tokens: float = field(default=0.0, init=False)
    _refilled: float = field(default=0.0, init=False)

    # what a subclass (a test's scripted fake) may change
    def accepts(self, key: str | None) -> bool:
        """Whether ``key`` may call: the configured key or one ``POST /api/Auth`` issued;
        any non-empty key when none is configured."""
        if not key:
            return False
        return self.api_key is None or key == self.api_key or key in self.issued

    def login(self, username: Any, password: Any) -> str | None:
        """The key a login gets, or None for a wrong username or password (any login
        works when none is configured)."""
        if self.username is not None and (username, password) != (self.username, self.password):
            return None
        if self.api_key is not None:
            return self.api_key
        key = "sandbox-" + secrets.token_hex(8)
        self.issued.add(key)
        return key

    def order(self, order_id: int) -> Order | None:
        return self.world.orders.get(order_id)

    def asn(self, asn_id: int) -> Asn | None:
        return self.world.asns.get(asn_id)

    def outage(self, seconds: float, status: int = 429) -> None:
        self.outage_until = asyncio.get_running_loop().time() + seconds
        self._outage_status = status

    # the API
    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        shape = re.sub(r"/\d+", "/{id}", path.removeprefix("/api/"))
        self.calls[f"{request.method} {shape}"] += 1
        now = asyncio.get_running_loop().time()
        if now < self.outage_until:
            return self.answer(
                self._outage_status, {"Message": "Too many requests"}, {"Retry-After": "1"}
            )
        if self._too_fast(now):
            return self.answer(429, {"Message": "API calls quota exceeded"}, {"Retry-After": "1"})
        if request.method == "POST" and path == "/api/Auth":
            return await self._auth(request)
        if request.method == "GET" and path == "/":  # for a browser, and a readiness probe
            return self.answer(200, {"Message": "mintsoft-bridge sandbox: see docs/sandbox.md"})
        if not self.accepts(request.headers.get("ms-apikey")):
            return self.answer(401, {"Message": DENIED})
        q = request.query
        try:
            if request.method == "GET" and path == "/api/Order/List":
                if self.page_delay:
                    await asyncio.sleep(self.page_delay)
                return self.answer(200, self._list(q))
            if request.method == "GET" and path == "/api/Order/Shipments/TrackingEvents/List":
                return self.answer(200, self._tracking(q))
        except ValueError:  # a Limit, PageNo, id or time that is not one
            return self.answer(400, {"Message": "The request is invalid."})
        if request.method == "GET" and path == "/api/Order/Shipments/TrackingEvents/Statuses":
            return self.answer(200, TRACKING_STATUSES)
        match = re.fullmatch(r"/api/(Order|ASN)/(\d+)(/ConnectActions|/Splits)?", path)
        found: Order | Asn | None = None
        kind, number, tail = match.groups() if match else ("", "0", None)
        if kind == "Order":
            found = self.order(int(number))
        elif kind == "ASN" and tail != "/Splits":
            found = self.asn(int(number))
        if found is None:
            return self.answer(404, {"Message": f"No HTTP resource was found for '{path}'"})
        if request.method == "GET" and tail is None:
            return self.answer(200, found.document())
        if request.method == "GET" and tail == "/Splits":
            return self.answer(200, self.world.splits.get(found.id, []))
        if tail == "/ConnectActions" and request.method == "GET":
            return self.answer(200, [a | {f"{kind}Id": found.id} for a in found.actions])
        if tail == "/ConnectActions" and request.method == "PUT":
            return await self._put_actions(request, found)
        return self.answer(405, {"Message": "The requested resource does not support it"})

    def _too_fast(self, now: float) -> bool:
        if self.rate is None:
            return False
        burst = max(1.0, 2 * self.rate)
        if not self._refilled:
            self._tokens, self._refilled = burst, now
        self._tokens = min(burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1:
            return True
        self._tokens -= 1
        return False

    async def _auth(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        key = (
            self.login(body.get("Username"), body.get("Password"))
            if isinstance(body, dict)
            else None
        )
        if key is None:
            return self.answer(400, {"Message": "Invalid username or password"})
        return self.answer(200, key)

    async def _put_actions(self, request: web.Request, order: Order | Asn) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self.answer(400, {"Message": "The request is invalid."})
        self.puts[order.id] += 1
        order.actions = [body | {"ID": 500000 + order.id}]
        result = {
            "ID": order.id,
            "Success": True,
            "Message": None,
            "WarningMessage": None,
            "AllocatedFromReplen": False,
        }
        return self.answer(200, result)

    @staticmethod
    def _page(rows: list[Any], q: Any, largest: int) -> list[Any]:
        limit = min(int(q.get("Limit", largest)), largest)
        page = int(q.get("PageNo", 1))
        return rows[(page - 1) * limit : page * limit]

    def _list(self, q: Any) -> list[dict[str, Any]]:
        rows = list(self.world.orders.values())
        if "SinceLastUpdated" in q:
            since = CLOCK.parse(q["SinceLastUpdated"])
            rows = [o for o in rows if o.last_updated >= since]
        if "SinceDate" in q:
            since = CLOCK.parse(q["SinceDate"])
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
        return [o.document() for o in self._page(rows, q, ORDER_PAGE)]

    def _tracking(self, q: Any) -> list[dict[str, Any]]:
        rows = list(self.world.tracking)
        if "SinceLastUpdated" in q:
            since = CLOCK.parse(q["SinceLastUpdated"])
            rows = [e for e in rows if e["_at"] >= since]
        if "TrackingStatusId" in q:
            rows = [e for e in rows if e["TrackingStatusId"] == int(q["TrackingStatusId"])]
        return [public(e) for e in self._page(rows, q, TRACKING_PAGE)]

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        self.answers[status] += 1
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=headers or {},
        )


async def listen(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], host: str, port: int
) -> tuple[web.AppRunner, str]:
    """Every method and path to ``handler`` (e.g. :meth:`SandboxApi.handle`) on
    ``host:port`` (0: a port the system picks); returns the runner (``cleanup()`` stops it)
    and the base URL. A port in use raises ``OSError``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, f"http://{host}:{bound}"
