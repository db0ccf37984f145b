"""How fast a subscriber may call its handler or forward target.

:class:`Pacer` combines the subscriber's ``rate_limit`` (a leaky bucket from aiolimiter: at
most ``count`` calls per ``seconds``, after a first burst of ``count``) with pauses the target
asked for (a ``429`` or ``503`` with ``Retry-After``): :meth:`Pacer.wait` returns when the next
call may go out. A pause is no failure: the message waits in the worker, no try is spent.

The limit holds for the subscriber as a whole because of where it runs, not by counting
across processes: a rate-limited subscriber's queue has a single active consumer, so one
worker calls at a time and its bucket is the subscriber's. An ordered subscriber's
partitions each have one active consumer, possibly in different workers: the rate is split
into one bucket per partition (a *lane*, :data:`LANE`), each ``1/partitions`` of it, so the
partitions together never pass it wherever they run (one busy partition gets only its
share). Pauses reach every worker through :mod:`bridge.worker.pauses`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar

from aiolimiter import AsyncLimiter

from bridge.core.durations import Rate

log = logging.getLogger("bridge.worker.pacing")

MAX_PAUSE = 300.0
"""A longer ``Retry-After`` is cut to this many seconds (the message waits unacked)."""


LANE: ContextVar[int] = ContextVar("bridge_pacing_lane", default=0)
"""The lane (an ordered subscriber's partition) of the delivery being handled: set by the
partition's delivery task, read by :meth:`Pacer.wait` down its call chain."""


def lane_bucket(rate: Rate, lanes: int) -> tuple[float, float]:
    """``(max_rate, time_period)`` of an aiolimiter bucket holding ``1/lanes`` of ``rate``
    (at least one whole call: ``5/s`` over 8 lanes is one call per 1.6 s each)."""
    count = rate.count / lanes
    if count >= 1:
        return count, rate.seconds
    return 1.0, rate.seconds / count


class Pacer:
    """The gate every handler call of one subscriber passes: pauses, then the rate limit
    (split over ``lanes`` buckets; see the module doc)."""

    def __init__(self, subscriber: str, rate: Rate | None = None, lanes: int = 1) -> None:
        self.subscriber = subscriber
        self.rate = rate
        self._limiters = (
            [AsyncLimiter(*lane_bucket(rate, lanes)) for _ in range(lanes)]
            if rate is not None
            else []
        )
        self._resume_at = 0.0
        self._on_pause: list[Callable[[float], None]] = []

    def on_pause(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(seconds)`` when a target here asks for a pause (to share it)."""
        self._on_pause.append(callback)

    @property
    def open(self) -> bool:
        """True when a call may go out now without waiting (no rate limit, no pause):
        :meth:`wait` need not be awaited."""
        return not self._limiters and self._resume_at <= time.monotonic()

    @property
    def paused_for(self) -> float:
        """Seconds left of a pause the target asked for (0 when none)."""
        return max(0.0, self._resume_at - time.monotonic())

    def pause(self, seconds: float, *, shared: bool = True) -> float:
        """Hold every call of this subscriber for ``seconds`` (cut to :data:`MAX_PAUSE`);
        returns the pause applied. ``shared``: the target asked here, so the ``on_pause``
        callbacks pass it on; ``False`` for a pause another worker passed on."""
        seconds = min(max(seconds, 0.0), MAX_PAUSE)
        resume_at = time.monotonic() + seconds
        if resume_at > self._resume_at:
            self._resume_at = resume_at
            log.warning(
                "target asked %s to wait %gs: pausing calls",
                "this worker" if shared else "another worker",
                round(seconds, 3),
                extra={"subscriber": self.subscriber},
            )
        if shared:
            for callback in self._on_pause:
                callback(seconds)
        return seconds

    async def wait(self) -> None:
        """Return when the next call may go out."""
        await self._sit_out_pause()
        if self._limiters:
            await self._limiters[LANE.get() % len(self._limiters)].acquire()
            # A pause may have begun while this call queued for the limiter.
            await self._sit_out_pause()

    async def _sit_out_pause(self) -> None:
        # A pause can only grow while we sleep (pause() extends _resume_at): sleep again
        # for what is left until none is.
        left = self.paused_for
        while left > 0:
            await asyncio.sleep(left)
            left = self.paused_for
