"""The retry ladder and the circuit breaker as pure policy: no broker, no real sleeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.amqp.connection import BrokerLink
from bridge.errors import PermanentError
from bridge.worker.breaker import CircuitBreaker
from bridge.worker.handling import Handling, SubscriptionKind
from bridge.worker.message import Message
from bridge.worker.retry import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    DeadLetter,
    Ladder,
    Retry,
    WaitInPlace,
)
from bridge.worker.subscribers import Subscriber

LADDER = Ladder("erp", (5_000, 60_000, 600_000), in_process_tries=3)


def test_each_failed_delivery_moves_one_step_then_to_the_dlq() -> None:
    assert LADDER.after_failure(1) == Retry("erp.retry.0", 2, 5_000)
    assert LADDER.after_failure(2) == Retry("erp.retry.1", 3, 60_000)
    assert LADDER.after_failure(3) == Retry("erp.retry.2", 4, 600_000)
    assert LADDER.after_failure(4) == DeadLetter("erp.dlq", 4)


def test_a_permanent_error_goes_to_the_dlq_at_once() -> None:
    assert LADDER.after_failure(1, permanent=True) == DeadLetter("erp.dlq", 1)


def test_no_delays_means_the_first_failure_is_dead_lettered() -> None:
    assert Ladder("x", ()).after_failure(1) == DeadLetter("x.dlq", 1)


def test_handler_attempts_count_every_call_across_deliveries() -> None:
    assert [LADDER.handler_attempt(d, t) for d in (1, 2) for t in (1, 2, 3)] == [1, 2, 3, 4, 5, 6]


def test_crash_loop_starts_at_the_redelivery_limit() -> None:
    assert not LADDER.crash_loop(LADDER.redelivery_limit - 1)
    assert LADDER.crash_loop(LADDER.redelivery_limit)


def test_backoff_doubles_up_to_its_ceiling_with_bounded_jitter() -> None:
    for tries in range(1, 12):
        base = min(BACKOFF_INITIAL * 2 ** (tries - 1), BACKOFF_MAX)
        for _ in range(20):
            assert base <= LADDER.backoff(tries) <= base + BACKOFF_INITIAL


def _handling(ladder: Ladder, handler: Any) -> Handling:
    sub = Subscriber(
        name=ladder.subscriber,
        events=("*",),
        retry_delays_ms=ladder.delays_ms,
        in_process_tries=ladder.in_process_tries,
    )
    link = BrokerLink(("amqp://guest:guest@127.0.0.1:1/",), name="test no broker")

    async def nowhere(_delivered: Any) -> None:
        raise AssertionError("nothing is given back here")

    kind = SubscriptionKind(ladder, give_back=nowhere)
    handling = Handling("x", sub, handler, kind, link, paused=lambda: False, records=False)
    return handling


def _message() -> Message:
    return Message(event="despatched", body=b"{}", message_id="m", headers={})


async def test_the_one_loop_tries_in_process_with_the_backoff_schedule() -> None:
    seen: list[int] = []

    async def failing(message: Message) -> None:
        seen.append(message.attempt)
        raise ValueError("nope")

    handling = _handling(LADDER, failing)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    handling.sleep = sleep
    error, _took = await handling._tries(None, _message())  # type: ignore[arg-type]
    assert isinstance(error, ValueError)
    assert seen == [1, 2, 3]  # every call counted; then the ladder's first step
    assert len(waits) == 2
    for number, wait in enumerate(waits, start=1):
        base = BACKOFF_INITIAL * 2 ** (number - 1)
        assert base <= wait <= base + BACKOFF_INITIAL


async def test_the_one_loop_never_retries_a_permanent_error() -> None:
    calls = 0

    async def permanent(message: Message) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("no")

    error, _took = await _handling(LADDER, permanent)._tries(None, _message())  # type: ignore[arg-type]
    assert isinstance(error, PermanentError) and calls == 1


async def test_the_one_loop_never_swallows_a_cancellation() -> None:
    calls = 0

    async def cancelled(message: Message) -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await _handling(LADDER, cancelled)._tries(None, _message())  # type: ignore[arg-type]
    assert calls == 1


async def test_an_ordered_ladder_waits_in_place_then_dead_letters() -> None:
    ladder = Ladder("erp", (10, 10), in_process_tries=2, in_place=True)
    assert ladder.after_failure(1) == WaitInPlace(2, 10)
    assert ladder.after_failure(3) == DeadLetter("erp.dlq", 3)
    seen: list[tuple[int, int]] = []

    async def failing(message: Message) -> None:
        seen.append((message.delivery, message.attempt))
        raise ValueError("nope")

    handling = _handling(ladder, failing)

    async def sleep(seconds: float) -> None:
        return None

    handling.sleep = sleep
    message = _message()
    error, _took = await handling._tries(None, message)  # type: ignore[arg-type]
    assert isinstance(error, ValueError)
    assert seen == [(1, 1), (1, 2), (2, 3), (2, 4), (3, 5), (3, 6)]
    assert ladder.after_failure(message.delivery) == DeadLetter("erp.dlq", 3)


class _Clock:
    """Records the breaker's waits and lets each one pass at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


async def test_breaker_opens_after_threshold_failures_in_a_row_and_closes_on_a_probe() -> None:
    answers = iter([False, False, False, True])
    clock = _Clock()
    changes: list[bool] = []

    async def probe() -> bool:
        return next(answers)

    breaker = CircuitBreaker(
        "erp-unit", probe, threshold=3, min_wait=0.5, max_wait=1.5, sleep=clock.sleep
    )
    breaker.on_change(changes.append)
    breaker.target_down()
    breaker.target_down()
    breaker.succeeded()  # a success resets the count
    breaker.target_down()
    breaker.target_down()
    assert not breaker.is_open
    breaker.target_down()
    assert breaker.is_open and changes == [True]
    for _ in range(100):
        if not breaker.is_open:
            break
        await asyncio.sleep(0)
    assert not breaker.is_open and changes == [True, False]
    assert clock.waits == [0.5, 1.0, 1.5, 1.5]  # doubling, capped
    await breaker.close()


async def test_breaker_close_stops_probing() -> None:
    clock = _Clock()

    async def probe() -> bool:
        return False

    breaker = CircuitBreaker("erp-unit-2", probe, threshold=1, sleep=clock.sleep)
    breaker.target_down()
    await asyncio.sleep(0)
    await breaker.close()
    seen = len(clock.waits)
    await asyncio.sleep(0)
    assert len(clock.waits) == seen
    assert breaker.is_open  # closing the breaker object is not the target coming back
