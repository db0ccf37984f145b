"""cancel_and_wait: stops a background task, and never swallows its caller's cancellation."""

from __future__ import annotations

import asyncio

import pytest

from bridge.core.tasks import being_cancelled, cancel_and_wait


async def test_it_cancels_the_task_and_waits_for_its_unwinding() -> None:
    unwound = asyncio.Event()

    async def background() -> None:
        try:
            await asyncio.Event().wait()  # hangs until cancelled
        finally:
            await asyncio.sleep(0)
            unwound.set()

    task = asyncio.create_task(background())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled() and unwound.is_set()
    await cancel_and_wait(None)


async def test_the_callers_own_cancellation_is_passed_on() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()  # hangs until cancelled
        finally:
            await release.wait()  # unwinding takes a while

    background = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)

    async def stopper() -> str:
        await cancel_and_wait(background)
        return "carried on"  # wrong: its own cancellation was swallowed

    caller = asyncio.create_task(stopper())
    await asyncio.sleep(0)
    caller.cancel()  # the caller is cancelled while it waits for the background task
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_being_cancelled_tells_our_cancellation_from_a_cancelled_future() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert not being_cancelled()


async def test_stop_on_signals_sets_its_event_on_sigterm_and_lets_go_after() -> None:
    import os
    import signal

    from bridge.core.tasks import stop_on_signals

    loop = asyncio.get_running_loop()
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
    assert stop.is_set()
    # Outside the block the handler is gone: removing it again reports nothing to remove.
    assert loop.remove_signal_handler(signal.SIGTERM) is False
