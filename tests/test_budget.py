"""The byte budget of large bodies: never more than its capacity held, waiters served in
arrival order, and a waiter that gives up leaves nothing behind. No broker."""

from __future__ import annotations

import asyncio

import pytest

from bridge.receiving.budget import ByteBudget


async def test_never_more_than_the_capacity_is_held_and_every_holder_gets_its_turn() -> None:
    budget = ByteBudget(40)
    peak = 0
    order: list[int] = []

    async def hold(n: int, size: int) -> None:
        nonlocal peak
        held = await budget.acquire(size)
        order.append(n)
        peak = max(peak, budget.held)
        await asyncio.sleep(0.01)
        budget.release(held)

    await asyncio.gather(*(hold(n, 10) for n in range(32)))
    assert peak == 40
    assert order == list(range(32))  # in arrival order
    assert budget.held == 0


async def test_a_request_over_the_capacity_holds_all_of_it() -> None:
    budget = ByteBudget(40)
    assert await budget.acquire(100) == 40
    assert budget.held == 40
    budget.release(40)
    assert budget.held == 0


@pytest.mark.parametrize("when", ["waiting", "granted"])
async def test_a_waiter_that_gives_up_leaves_nothing_behind(when: str) -> None:
    budget = ByteBudget(40)
    first = await budget.acquire(40)
    waiter = asyncio.create_task(budget.acquire(30))
    small = asyncio.create_task(budget.acquire(10))
    await asyncio.sleep(0)
    if when == "granted":
        budget.release(first)  # grants the waiter, which is cancelled before it resumes
        waiter.cancel()
    else:
        waiter.cancel()
        await asyncio.sleep(0)
        budget.release(first)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await small == 10
    assert budget.held == 10
    budget.release(10)
    assert budget.held == 0
