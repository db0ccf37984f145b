"""One timer bounds every handler call of a subscriber as asyncio.timeout() would: a call
past its deadline is cancelled and told TIMED_OUT, each at its own deadline; a call that
ends in time leaves nothing behind; a cancellation from elsewhere is never taken for a
timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bridge.worker.deadlines import IN_TIME, TIMED_OUT, TIMED_OUT_AND_CANCELLED, Deadlines


async def _call(deadlines: Deadlines, seconds: float | None) -> tuple[int, float]:
    """A call taking ``seconds``, or (None) one that never ends unless cancelled."""
    task: Any = asyncio.current_task()
    cancelling = deadlines.start(task)
    started = time.monotonic()
    try:
        if seconds is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        ended = deadlines.finish(task, cancelling)
        if ended != TIMED_OUT:
            raise
        return ended, time.monotonic() - started
    return deadlines.finish(task, cancelling), time.monotonic() - started


async def test_each_call_times_out_at_its_own_deadline_and_quick_ones_do_not() -> None:
    deadlines = Deadlines(0.2)
    slow = asyncio.create_task(_call(deadlines, None))
    await asyncio.sleep(0.1)
    later = asyncio.create_task(_call(deadlines, None))
    quick = asyncio.create_task(_call(deadlines, 0.01))
    (slow_end, slow_took), (later_end, later_took), (quick_end, _) = await asyncio.gather(
        slow, later, quick
    )
    assert (slow_end, later_end, quick_end) == (TIMED_OUT, TIMED_OUT, IN_TIME)
    assert 0.2 <= slow_took < 1.0 and 0.2 <= later_took < 1.0
    assert not deadlines._running and not deadlines._expired  # nothing left behind
    # The task that timed out is not left cancelling: it goes on as before.
    assert slow.cancelling() == 0 and not slow.cancelled()


async def test_a_cancellation_from_elsewhere_is_not_a_timeout() -> None:
    deadlines = Deadlines(10)
    task = asyncio.create_task(_call(deadlines, None))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._running and not deadlines._expired


async def test_a_cancellation_from_elsewhere_after_the_deadline_still_cancels() -> None:
    deadlines = Deadlines(0.05)
    seen: list[int] = []

    async def stubborn() -> None:
        task: Any = asyncio.current_task()
        cancelling = deadlines.start(task)
        try:
            await asyncio.Event().wait()  # until the deadline cancels it
        except asyncio.CancelledError:
            task.cancel()  # a shutdown's cancel arrives while ours is being handled
            seen.append(deadlines.finish(task, cancelling))
            raise

    task = asyncio.create_task(stubborn())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [TIMED_OUT_AND_CANCELLED]
