"""The one idiom for stopping background tasks (broker link, drain, probes), for telling
our own cancellation from a cancelled future we were awaiting, and for a process's stop on
SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def being_cancelled() -> bool:
    """Whether the running task itself is being cancelled (``stop()``, shutdown), as opposed
    to a future it awaited being cancelled under it (a renewed link, a timer)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished unwinding. The caller's own
    cancellation, arriving meanwhile, is passed on, never swallowed."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if being_cancelled():
            raise


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event that SIGTERM or SIGINT sets while the block runs (the process then stops
    cleanly instead of dying mid-write); the handlers are removed when the block ends."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
