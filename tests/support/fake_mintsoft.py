"""The sandbox's Mintsoft API (bridge/mintsoft/sandbox) in its own thread, so tests can run
the synchronous command line against it, with what a test scripts on top: every request
recorded, ``script`` answers first whatever the request, ``refuse`` answers for one order,
``issued_keys`` / ``valid_keys`` for the login and key checks. Every order id exists (the
tests name orders and ASNs they never created). Never the real Mintsoft."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.mintsoft.sandbox.api import SandboxApi
from bridge.mintsoft.sandbox.world import Asn, Order, World
from tests.support.local_app import serve_locally


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Scripted:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _ScriptedApi(SandboxApi):
    def __init__(self, fake: FakeMintsoft) -> None:
        super().__init__(World(), username=fake.username, password=fake.password)
        self.fake = fake

    def accepts(self, key: str | None) -> bool:
        return key in self.fake.valid_keys

    def login(self, username: Any, password: Any) -> str | None:
        if super().login(username, password) is None or not self.fake.issued_keys:
            return None
        return self.fake.issued_keys.popleft()

    def order(self, order_id: int) -> Order | None:
        if order_id not in self.world.orders:
            self.world.orders[order_id] = Order(order_id, 12, 1)
        return self.world.orders[order_id]

    def asn(self, asn_id: int) -> Asn | None:
        if asn_id not in self.world.asns:
            self.world.asns[asn_id] = Asn(asn_id, 12, 1)
        return self.world.asns[asn_id]

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        fake = self.fake
        fake.requests.append(
            Recorded(request.method, request.path, dict(request.headers), body, time.monotonic())
        )
        scripted = fake.script.popleft() if fake.script else None
        if scripted is None and request.path.endswith("/ConnectActions"):
            order_id = int(request.path.split("/")[3])
            if order_id in fake.refuse and self.accepts(request.headers.get("ms-apikey")):
                scripted = fake.refuse[order_id]
        if scripted is not None:
            return self.answer(scripted.status, scripted.body, scripted.headers)
        return await super().handle(request)


class FakeMintsoft:
    """``POST /api/Auth`` hands out ``issued_keys`` in turn for ``username``/``password``;
    a call with a key in ``valid_keys`` is answered by the sandbox's API, 401 otherwise."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Scripted] = deque()
        self.refuse: dict[int, Scripted] = {}
        self.username = "ops@example.com"
        self.password = "s3cret-pw"
        self.issued_keys: deque[str] = deque()
        self.valid_keys: set[str] = set()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def of(self, method: str, path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    async def _start(self) -> None:
        self._runner, self.url = await serve_locally(_ScriptedApi(self).handle)
