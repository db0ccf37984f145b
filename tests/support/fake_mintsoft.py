"""A fake Mintsoft API served by aiohttp on a loopback port, in its own thread, so tests can
run the synchronous command line against it. It records every request and answers what the
test scripted; never the real Mintsoft."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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


class FakeMintsoft:
    """``POST /api/Auth`` hands out ``issued_keys`` in turn for ``username``/``password``;
    ``PUT /api/Order/{id}/ConnectActions`` answers 200 for a key in ``valid_keys``, 401
    otherwise. ``script`` answers (status, body, headers) come first, whatever the request;
    ``refuse`` maps an order id to a scripted answer for that order only."""

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
        self._runner, self.url = await serve_locally(self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.requests.append(
            Recorded(request.method, request.path, dict(request.headers), body, time.monotonic())
        )
        if self.script:
            return self._answer(self.script.popleft())
        if request.method == "POST" and request.path == "/api/Auth":
            if (
                isinstance(body, dict)
                and body.get("Username") == self.username
                and body.get("Password") == self.password
                and self.issued_keys
            ):
                return self._answer(Scripted(200, self.issued_keys.popleft()))
            return self._answer(Scripted(400, {"Message": "Invalid username or password"}))
        if request.method == "PUT" and request.path.endswith("/ConnectActions"):
            if request.headers.get("ms-apikey") not in self.valid_keys:
                return self._answer(Scripted(401, {"Message": "Authorization has been denied"}))
            order_id = int(request.path.split("/")[3])
            if order_id in self.refuse:
                return self._answer(self.refuse[order_id])
            return self._answer(Scripted(200, {"Success": True, "ID": order_id}))
        return self._answer(Scripted(404, {"Message": "No HTTP resource was found"}))

    @staticmethod
    def _answer(scripted: Scripted) -> web.Response:
        return web.Response(
            status=scripted.status,
            body=json.dumps(scripted.body).encode(),
            content_type="application/json",
            headers=scripted.headers,
        )
