"""The one idiom for stopping background tasks (broker link, drain, probes) and for telling
our own cancellation from a cancelled future we were awaiting."""

from __future__ import annotations

import asyncio
from typing import Any


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
