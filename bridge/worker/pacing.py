"""How fast a subscriber may call its handler or forward target, in one worker process.

:class:`Pacer` combines the subscriber's ``rate_limit`` (a leaky bucket from aiolimiter: at
most ``count`` calls per ``seconds``, after a first burst of ``count``) with pauses the target
asked for (a ``429`` or ``503`` with ``Retry-After``): :meth:`Pacer.wait` returns when the next
call may go out. A pause is no failure: the message waits in the worker, no try is spent.
Limits are per process: N worker replicas together call up to N times the rate.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiolimiter import AsyncLimiter

from bridge.core.durations import Rate

log = logging.getLogger("bridge.worker.pacing")

MAX_PAUSE = 300.0
"""A longer ``Retry-After`` is cut to this many seconds (the message waits unacked)."""


class Pacer:
    """The gate every handler call of one subscriber passes: pauses, then the rate limit."""

    def __init__(self, subscriber: str, rate: Rate | None = None) -> None:
        self.subscriber = subscriber
        self.rate = rate
        self._limiter = AsyncLimiter(rate.count, rate.seconds) if rate is not None else None
        self._resume_at = 0.0

    @property
    def paused_for(self) -> float:
        """Seconds left of a pause the target asked for (0 when none)."""
        return max(0.0, self._resume_at - time.monotonic())

    def pause(self, seconds: float) -> float:
        """Hold every call of this subscriber for ``seconds`` (cut to :data:`MAX_PAUSE`);
        returns the pause applied."""
        seconds = min(max(seconds, 0.0), MAX_PAUSE)
        resume_at = time.monotonic() + seconds
        if resume_at > self._resume_at:
            self._resume_at = resume_at
            log.warning(
                "target asked to wait %gs: pausing calls",
                round(seconds, 3),
                extra={"subscriber": self.subscriber},
            )
        return seconds

    async def wait(self) -> None:
        """Return when the next call may go out."""
        await self._sit_out_pause()
        if self._limiter is not None:
            await self._limiter.acquire()
            # A pause may have begun while this call queued for the limiter.
            await self._sit_out_pause()

    async def _sit_out_pause(self) -> None:
        # A pause can only grow while we sleep (pause() extends _resume_at): sleep again
        # for what is left until none is.
        left = self.paused_for
        while left > 0:
            await asyncio.sleep(left)
            left = self.paused_for
