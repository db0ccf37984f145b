"""One publish at a time per message id, any number for distinct ids.

aiormq's public ``basic_publish`` matches a ``basic.return`` to its publish by message id
alone: with two copies of one id in flight, the wrong one gets the return and the
returned one looks confirmed. :class:`TwinGate` makes a copy wait until its twin is
settled. It never waits without a bound of its own: the caller's publish holding the
slot is bounded, and ``deadline`` (loop time) bounds the wait when given (TimeoutError).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class TwinGate:
    """Lets one holder per key through at a time (an empty key is never held back)."""

    def __init__(self) -> None:
        self._held: dict[str, asyncio.Future[None] | None] = {}

    @contextlib.asynccontextmanager
    async def alone(self, key: str | None, deadline: float | None = None) -> AsyncIterator[None]:
        if not key:
            yield
            return
        loop = asyncio.get_running_loop()
        held = self._held
        while key in held:
            waiter = held[key]
            if waiter is None:
                waiter = held[key] = loop.create_future()
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(waiter)  # shared by every twin waiting
        held[key] = None
        try:
            yield
        finally:
            waiter = held.pop(key)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
