"""Pacing a replay's copies so it does not flood its target: at most a :class:`Rate`.

Copy ``i`` (from 0) is sent no earlier than ``start + i / rate.per_second``: evenly spaced,
no burst, so a replay of thousands adds to the subscriber's queue no faster than the
subscriber may call its target (its ``rate_limit``) and live webhooks do not wait behind a
wall of copies. :func:`schedule` is that plan, pure; :class:`Pacer` waits it out on a clock
it is given (a test passes a fake one). A pacer that falls behind (the broker slow to
confirm) does not catch up in a burst: each copy waits at least its own interval after the
previous one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bridge.core.durations import Rate, parse_rate

DEFAULT_RATE = parse_rate("100/s")
"""A replay to a subscriber without a ``rate_limit``: 100 copies a second (6,000 a minute)."""


def interval(rate: Rate) -> float:
    """Seconds between two copies at ``rate``."""
    return 1.0 / rate.per_second


def schedule(rate: Rate, copies: int) -> list[float]:
    """When each of ``copies`` copies may go, in seconds after the first."""
    step = interval(rate)
    return [i * step for i in range(copies)]


def duration(rate: Rate, copies: int) -> float:
    """How long ``copies`` copies take at ``rate`` (the last one's time in :func:`schedule`)."""
    return max(0, copies - 1) * interval(rate)


class Pacer:
    """Waits before each copy until its time (see the module doc)."""

    def __init__(
        self,
        rate: Rate,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.step = interval(rate)
        self.clock = clock or asyncio.get_running_loop().time
        self.sleep = sleep
        self._next: float | None = None

    def due_in(self) -> float:
        """Seconds until the next copy may go (0: now)."""
        return 0.0 if self._next is None else max(0.0, self._next - self.clock())

    async def wait(self) -> None:
        """Return when the next copy may go."""
        now = self.clock()
        if self._next is not None and now < self._next:
            await self.sleep(self._next - now)
            now = self.clock()
        self._next = max(now, self._next or now) + self.step
