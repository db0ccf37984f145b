"""Limits on signing in to the console, and password checks off the event loop.

Sign-in attempts are limited per client address (:data:`PER_ADDRESS` in :data:`WINDOW`
seconds: contract section 9, at most 5 a minute) and over every address together
(:data:`OVERALL`). An attempt counts from the moment it starts, so parallel requests cannot
go around the limit; one that signs in gives its count back. Past a limit the console
answers 429 with ``Retry-After`` (the seconds until the oldest counted attempt leaves the
window), even for the right password, and checks no password at all.

The log gets a summary, never a line per guess: one WARNING for the first wrong password of
an address in a window, one when an address (or everyone) is first limited, at most
:data:`NAMED_PER_WINDOW` addresses named each way per window, and one line per window
counting what was refused.

Password checks (a ``scrypt:`` hash costs about 100 ms of CPU) run in a small thread pool,
at most :data:`WAITING` queued: hashlib's scrypt and pbkdf2 release the GIL, so the event
loop keeps answering every other request meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger("bridge.console")

WINDOW = 60.0
PER_ADDRESS = 5
OVERALL = 100
NAMED_PER_WINDOW = 5
WORKERS = 2
WAITING = 32


@dataclass(eq=False, repr=False)  # repr=False: it holds client addresses and user names
class SignInLimits:
    """Counts sign-in attempts per client address and overall, in a sliding window."""

    per_address: int = PER_ADDRESS
    overall: int = OVERALL
    window: float = WINDOW
    clock: Callable[[], float] = time.monotonic
    _by_address: dict[str, deque[float]] = field(default_factory=dict, init=False)
    _all: deque[float] = field(default_factory=deque, init=False)
    _refused: int = field(default=0, init=False)
    _named: set[str] = field(default_factory=set, init=False)
    _failed: set[str] = field(default_factory=set, init=False)
    _window_start: float = field(init=False)

    def __post_init__(self) -> None:
        self._window_start = self.clock()

    def begin(self, address: str) -> int | None:
        """Count an attempt from ``address``: ``None`` when it may go on, else the seconds
        to wait (for ``Retry-After``)."""
        now = self.clock()
        self._expire(now)
        mine = self._by_address.get(address, deque())
        if len(mine) >= self.per_address:
            return self._refuse(address, mine[0] + self.window - now, "from " + address)
        if len(self._all) >= self.overall:
            return self._refuse("*", self._all[0] + self.window - now, "from every address")
        mine.append(now)
        self._by_address[address] = mine
        self._all.append(now)
        return None

    def succeeded(self, address: str) -> None:
        """A signed-in attempt does not count against ``address`` (nor overall)."""
        mine = self._by_address.pop(address, deque())
        for stamp in mine:
            with contextlib.suppress(ValueError):
                self._all.remove(stamp)

    def failed(self, address: str) -> bool:
        """Whether a wrong password from ``address`` is worth a log line: the first from
        it in this window (at most :data:`NAMED_PER_WINDOW` addresses a window)."""
        if address in self._failed or len(self._failed) >= NAMED_PER_WINDOW:
            return False
        self._failed.add(address)
        return True

    def _refuse(self, who: str, wait: float, where: str) -> int:
        self._refused += 1
        if who not in self._named and len(self._named) < NAMED_PER_WINDOW:
            self._named.add(who)
            log.warning(
                "console: too many sign-in attempts %s: refused for the next %d s "
                "(further refusals are summed up once a minute)",
                where,
                math.ceil(wait),
            )
        return max(1, math.ceil(wait))

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        for address in [a for a, stamps in self._by_address.items() if stamps[-1] <= horizon]:
            del self._by_address[address]
        for stamps in self._by_address.values():
            while stamps and stamps[0] <= horizon:
                stamps.popleft()
        if now - self._window_start >= self.window:
            if self._refused:
                log.warning(
                    "console: %d sign-in attempt(s) refused in the last %d s (too many from %s)",
                    self._refused,
                    math.ceil(now - self._window_start),
                    ", ".join(sorted(self._named)) or "several addresses",
                )
            self._refused = 0
            self._named.clear()
            self._failed.clear()
            self._window_start = now


class Busy(Exception):
    """More password checks are waiting than :data:`WAITING`."""


class PasswordChecks:
    """Runs password checks in :data:`WORKERS` threads, at most :data:`WAITING` waiting."""

    def __init__(self, workers: int = WORKERS, waiting: int = WAITING) -> None:
        self._workers = workers
        self._waiting = waiting
        self._pending = 0
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, check: Callable[[str, str], bool], configured: str, given: str) -> bool:
        """``check(configured, given)`` in the pool; :class:`Busy` when too many wait."""
        if self._pending >= self._waiting:
            raise Busy
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="console-password")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, check, configured, given)
        finally:
            self._pending -= 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
