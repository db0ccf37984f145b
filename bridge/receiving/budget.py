"""A byte budget for large bodies: however many clients send large bodies at once, at most
``capacity`` bytes of them are read and held by the receiver; the rest wait their turn
(their bytes stay in the kernel's socket buffers and the client's), in arrival order.

A body holds its share from before it is read until its answer is decided, since that is
how long the receiver keeps it (and its copies for the broker) in memory. Nothing here
raises; a waiter that is cancelled (or times out) leaves no trace in the budget.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ByteBudget:
    """At most ``capacity`` bytes held at once; a request for more holds all of it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, size: int) -> int:
        """Wait until ``size`` bytes (at most ``capacity``) are free and hold them; returns
        what is held, to pass to :meth:`release`."""
        size = min(size, self.capacity)
        if not self._waiters and self.held + size <= self.capacity:
            self.held += size
            return size
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, turn)
        self._waiters.append(entry)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release(size)  # granted just as the waiter gave up
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._wake()  # a large waiter leaving may let smaller ones through
            raise
        return size

    def release(self, size: int) -> None:
        """Give back bytes from :meth:`acquire`, and let waiters through in order."""
        self.held -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            size, turn = self._waiters[0]
            if turn.done():  # cancelled, its task not yet resumed: it is no longer waiting
                self._waiters.popleft()
                continue
            if self.held + size > self.capacity:
                return
            self._waiters.popleft()
            self.held += size
            turn.set_result(None)
