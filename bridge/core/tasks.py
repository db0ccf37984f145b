"""The one idiom for stopping background tasks (broker link, drain, probes), for telling
our own cancellation from a cancelled future we were awaiting, for bounding a call in time
without losing a cancel (:func:`within`), and for a process's stop on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

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


async def within(seconds: float, call: Awaitable[T]) -> T:
    """``call``'s result, or :class:`TimeoutError` after ``seconds``. A cancel of the caller
    that arrives at any point, even with the answer, raises ``CancelledError``.

    The bound for a broker call, instead of aiormq's ``timeout=`` or ``asyncio.wait_for``
    (which aiormq's ``timeout=`` is): on Python 3.11, wait_for returns the answer and drops a
    cancel that arrives with it (CPython gh-86296), so a task being stopped went on as if
    nothing had happened (a worker's stop waited for ever). ``asyncio.timeout`` runs the call
    in the caller's own task and keeps the cancel."""
    async with asyncio.timeout(seconds):
        return await call


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
