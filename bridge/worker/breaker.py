"""The circuit breaker that pauses a subscriber while its target is down.

After ``threshold`` target-down failures in a row it opens and tells its listeners (the
subscription stops consuming: messages wait in the queue, no attempt spent); it then runs
``probe`` with a doubling wait (``min_wait`` to ``max_wait``) until the probe returns True,
closes, and tells the listeners again. ``sleep`` is injectable so the policy is tested
without waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bridge.core import metrics
from bridge.core.tasks import cancel_and_wait

log = logging.getLogger("bridge.worker.breaker")

BREAKER_THRESHOLD = 5
PROBE_MIN_WAIT = 0.5
PROBE_MAX_WAIT = 30.0


@dataclass(eq=False)
class CircuitBreaker:
    """Opens after ``threshold`` consecutive target-down failures; then runs ``probe``
    with a doubling wait until it returns True, and closes."""

    subscriber: str
    probe: Callable[[], Awaitable[bool]]
    threshold: int = BREAKER_THRESHOLD
    min_wait: float = PROBE_MIN_WAIT
    max_wait: float = PROBE_MAX_WAIT
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    is_open: bool = field(default=False, init=False)
    _failures: int = field(default=0, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _listeners: list[Callable[[bool], None]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        metrics.FORWARDER_CIRCUIT_OPEN.labels(self.subscriber).set(0)

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(is_open)`` whenever the breaker opens or closes."""
        self._listeners.append(listener)

    def succeeded(self) -> None:
        self._failures = 0

    def target_down(self) -> None:
        self._failures += 1
        if self.is_open or self._failures < self.threshold:
            return
        self.is_open = True
        metrics.FORWARDER_CIRCUIT_OPEN.labels(self.subscriber).set(1)
        log.warning(
            "target down after %d failures in a row: pausing consumption, probing",
            self._failures,
            extra={"subscriber": self.subscriber},
        )
        self._task = asyncio.create_task(self._probe_until_up(), name="breaker-probe")
        self._notify()

    async def _probe_until_up(self) -> None:
        wait = self.min_wait
        while True:
            await self.sleep(wait)
            if await self.probe():
                break
            wait = min(wait * 2, self.max_wait)
        self.is_open = False
        self._failures = 0
        self._task = None
        metrics.FORWARDER_CIRCUIT_OPEN.labels(self.subscriber).set(0)
        log.info("target answers again: resuming", extra={"subscriber": self.subscriber})
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self.is_open)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
