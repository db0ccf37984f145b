"""Bounding every handler call of one subscriber to its ``timeout``, with one loop timer for
all the calls in flight.

``asyncio.timeout()`` makes an object and a timer handle per call and moves the timer heap
twice, a sizable share of the CPU of a call to a quick handler. Here the calls of one
subscriber share the same bound, so their deadlines come in the order the calls started:
the calls in flight are kept in that order and one timer, set for the earliest deadline,
cancels each call whose deadline passed (as ``asyncio.timeout()`` does) and is set again
for the next one.

The cancellation follows ``asyncio.timeout()``'s rules: the expired call's task is
cancelled; :meth:`Deadlines.finish` withdraws that cancellation (``Task.uncancel``) and says
whether the call ran out of time, and whether a cancellation from elsewhere (a shutdown)
is pending too, which the caller must then let through. A call never outlives its deadline
by more than the loop's lateness; a call that ends in time leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from typing import Final

# How a watched call ended, as Deadlines.finish tells it (plain ints, not an Enum: read
# once per call, on the worker's hot path).
IN_TIME: Final = 0
TIMED_OUT: Final = 1
"""Its deadline passed (its cancellation by us withdrawn); nothing else cancelled it."""
TIMED_OUT_AND_CANCELLED: Final = 2
"""Its deadline passed, and its task was also cancelled from elsewhere."""


class Deadlines:
    """The calls in flight of one subscriber, each bounded to ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._running: dict[asyncio.Task[object], float] = {}
        """Task -> deadline (loop time), in the order the calls started (= deadline order)."""
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, task: asyncio.Task[object]) -> int:
        """Watch ``task``'s call from now; returns the task's count of pending
        cancellations, to give back to :meth:`finish`."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        self._running[task] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._fire)
        return task.cancelling()

    def finish(self, task: asyncio.Task[object], cancelling: int) -> int:
        """Stop watching ``task``'s call (whatever way it ended); ``cancelling`` is what
        :meth:`start` returned."""
        if self._running.pop(task, None) is not None or task not in self._expired:
            return IN_TIME
        self._expired.discard(task)
        if task.uncancel() <= cancelling:
            return TIMED_OUT
        return TIMED_OUT_AND_CANCELLED

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        running = self._running
        while running:
            task, deadline = next(iter(running.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._fire)
                return
            del running[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()
