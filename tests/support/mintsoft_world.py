"""The sandbox's Mintsoft (bridge/mintsoft/sandbox) served in the test's own event loop,
for the sync tests: ``await world.start()``; create and change orders; ``await
world.close()``. One model: the world (orders, connect actions, the webhook calls with a
seeded share dropped) and the API (paging, London times, ``ms-apikey``, outages) are the
package's; this only puts them on a free loopback port with no rate limit."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from bridge.mintsoft.sandbox.api import SandboxApi
from bridge.mintsoft.sandbox.world import Order, Sent, World
from tests.support.local_app import serve_locally

__all__ = ["MintsoftWorld", "Order", "Sent"]


class MintsoftWorld(World):
    """A :class:`World` with its API: ``calls``, ``puts``, ``answers``, ``page_delay`` and
    ``outage`` are the API's."""

    def __init__(self, api_key: str = "ms-key-1", drop: float = 0.0, seed: int = 7) -> None:
        super().__init__(drop=drop, seed=seed)
        self.api = SandboxApi(self, api_key=api_key)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        self._runner, self.url = await serve_locally(self.api.handle)
        await self.open()
        return self.url

    async def close(self) -> None:
        await super().close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def calls(self) -> Counter[str]:
        return self.api.calls

    @property
    def puts(self) -> Counter[int]:
        return self.api.puts

    @property
    def answers(self) -> Counter[int]:
        return self.api.answers

    @property
    def page_delay(self) -> float:
        return self.api.page_delay

    @page_delay.setter
    def page_delay(self, value: float) -> None:
        self.api.page_delay = value

    def outage(self, seconds: float, status: int = 429) -> None:
        self.api.outage(seconds, status)
