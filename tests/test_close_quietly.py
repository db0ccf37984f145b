"""``close_quietly``: a close that never returns, or fails, ends within its bound."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.amqp.connection import close_quietly


class _Hangs:
    """Stands in for a connection whose broker never answers the close."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def close(self, *args: Any) -> None:
        self.calls.append(args)
        await asyncio.Event().wait()


class _Fails:
    async def close(self, *args: Any) -> None:
        raise ConnectionResetError("gone")


async def test_a_close_that_never_returns_is_given_up_after_its_bound() -> None:
    hangs = _Hangs()
    async with asyncio.timeout(30):  # a guard: without the bound this test would hang
        await close_quietly(hangs, seconds=0.2)  # type: ignore[arg-type]
    assert hangs.calls == [()]

    reason = ConnectionError("renewed")
    async with asyncio.timeout(30):
        await close_quietly(hangs, seconds=0.2, reason=reason)  # type: ignore[arg-type]
    assert hangs.calls[-1] == (reason,)


async def test_a_close_that_fails_is_swallowed() -> None:
    await close_quietly(_Fails())  # type: ignore[arg-type]


async def test_being_cancelled_while_closing_still_cancels() -> None:
    task = asyncio.create_task(close_quietly(_Hangs(), seconds=60))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return
    raise AssertionError("the cancellation was swallowed")
