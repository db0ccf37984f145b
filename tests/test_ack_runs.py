"""A channel's acks go as one multiple ack where they settle every tag up to one, and never
cover a delivery not settled here: out-of-order acks go alone, a requeue goes before the
run's ack, a no_ack delivery sharing the channel does not hold the runs back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiormq.abc import AbstractChannel, ChannelFrame

from bridge.amqp import aiormq_internals as internals
from bridge.amqp.pipeline import MAX_SETTLED_AHEAD, AckRun, AckWriter, ack_frame, set_prefetch
from tests.conftest import consuming, only_a_sentinel_follows


def test_a_turn_settling_every_tag_so_far_is_one_multiple_ack() -> None:
    run = AckRun(7)
    for tag in (2, 1, 3):
        run.add(tag, True)
    assert run.frames() == ack_frame(7, 3, True, multiple=True)
    assert run.frames() == b""  # nothing new


def test_an_ack_beyond_an_unsettled_tag_goes_alone_and_joins_the_run_later() -> None:
    run = AckRun(1)
    run.add(2, True)
    run.add(3, True)
    assert run.frames() == ack_frame(1, 2, True) + ack_frame(1, 3, True)  # 1 still in hand
    run.add(1, True)
    assert run.frames() == ack_frame(1, 1, True, multiple=True)  # 2 and 3: acked already
    run.add(5, True)
    assert run.frames() == ack_frame(1, 5, True)  # 4 in hand


def test_a_requeue_goes_before_the_multiple_ack_that_would_take_it() -> None:
    run = AckRun(1)
    run.add(1, True)
    run.add(3, False)
    run.add(2, True)
    assert run.frames() == ack_frame(1, 3, False) + ack_frame(1, 2, True, multiple=True)
    run.add(4, False)
    assert run.frames() == ack_frame(1, 4, False)  # nothing acked in the run: no ack


def test_a_no_ack_delivery_fills_its_gap() -> None:
    run = AckRun(1)
    run.add(2, True)
    assert run.frames() == ack_frame(1, 2, True)
    run.add(1, None)
    run.add(3, True)
    assert run.frames() == ack_frame(1, 3, True, multiple=True)


def test_a_delivery_held_for_ever_ends_the_runs_not_the_memory() -> None:
    run = AckRun(1)
    for tag in range(2, MAX_SETTLED_AHEAD + 3):
        run.add(tag, True)
    run.frames()
    assert not run.runs and not run.ahead
    run.add(1, True)
    assert run.frames() == ack_frame(1, 1, True)  # one by one from now on


async def test_out_of_order_acks_and_a_requeue_settle_exactly_what_they_say(
    channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(internals.PATH_ENV, raising=False)
    queue, got = await consuming(channel, (str(index).encode() for index in range(5)))
    writer = AckWriter()
    first = [await asyncio.wait_for(got.get(), 10) for _ in range(5)]
    tags = {message.body: message.delivery_tag for message in first}
    assert all(tag is not None for tag in tags.values())
    # Settled out of order over two turns; "1" requeued, "0" last.
    for body, ack in ((b"3", True), (b"1", False), (b"4", True)):
        writer.settle(channel, tags[body], ack)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    for body in (b"2", b"0"):
        writer.settle(channel, tags[body], True)  # type: ignore[arg-type]
    again = await asyncio.wait_for(got.get(), 10)
    assert again.body == b"1" and again.redelivered  # the requeue, never taken by a run
    assert again.delivery_tag is not None
    writer.settle(channel, again.delivery_tag, True)
    # Nothing else comes back: the next delivery is a sentinel sent after the acks.
    writer.settle(channel, await only_a_sentinel_follows(channel, queue, got), True)
    assert await writer.written(channel, 5)
    ok = await channel.queue_declare(queue, passive=True)
    assert ok.message_count == 0


def _held_batch(channel: AbstractChannel) -> tuple[internals.FrameBatch, asyncio.Queue[Any]]:
    """A channel's frame batch writing into a queue of the test's (not the socket)."""
    batch = internals.FrameBatch(channel)
    written: asyncio.Queue[Any] = asyncio.Queue()
    batch._queue = written
    return batch, written


async def test_acks_short_of_a_run_wait_for_more_then_leave_together(
    channel: AbstractChannel,
) -> None:
    # A consumer settling a few messages at a time: its acks (and the records before them)
    # wait up to HOLD_SECONDS for more, so one write, one multiple ack and one records
    # message cover them all.
    batch, written = _held_batch(channel)
    batch.hold_run = 16
    settled = [1]
    batch.waiting = lambda: len(settled)
    batch.last = lambda: b"acks of %d" % len(settled)
    batch.due()
    for _ in range(5):
        await asyncio.sleep(0)  # a turn in which the flush held, then one more settles
        assert written.empty()
        settled.append(1)
        batch.due()
    frame = await asyncio.wait_for(written.get(), 10)
    assert frame.payload == b"acks of 6"
    await asyncio.sleep(internals.HOLD_SECONDS * 2)
    assert written.empty()


async def test_a_full_run_leaves_at_once_and_without_a_run_nothing_waits(
    channel: AbstractChannel,
) -> None:
    batch, written = _held_batch(channel)
    batch.hold_run = 4
    settled = [1, 1, 1]
    batch.waiting = lambda: len(settled)
    batch.last = lambda: b"acks of %d" % len(settled)
    batch.due()
    await asyncio.sleep(0)
    assert written.empty()  # 3 of 4: held
    settled.append(1)
    batch.due()
    await asyncio.sleep(0)  # the run is full: written in this turn, not at the timer
    assert written.get_nowait().payload == b"acks of 4"
    # A channel without a run (hold_run 1, a prefetch of 1 or none set): no wait at all.
    batch, written = _held_batch(channel)
    batch.waiting = lambda: 1
    batch.last = lambda: b"one ack"
    batch.due()
    await asyncio.sleep(0)
    assert written.get_nowait().payload == b"one ack"


async def test_a_consumers_acks_wait_for_three_quarters_of_its_prefetch(
    channel: AbstractChannel,
) -> None:
    # Three quarters: the broker can go on delivering the last quarter while the run fills.
    await set_prefetch(channel, 32)
    assert internals.frame_batch(channel).hold_run == 24
    await set_prefetch(channel, 1)  # an ordered partition's: its one ack never waits
    assert internals.frame_batch(channel).hold_run == 1


async def test_written_leaves_at_once_though_acks_came_while_it_waited(
    channel: AbstractChannel,
) -> None:
    # A stop waits for what is written while aiormq's writer queue is full; acks settled
    # meanwhile (fewer than a run) must go with it, not hold written() in a loop.
    batch = internals.FrameBatch(channel)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
    queue.put_nowait(ChannelFrame(payload=b"before", should_close=False))
    batch._queue = queue
    batch.hold_run = 16
    settled: list[int] = []
    batch.waiting = lambda: len(settled)

    def acks() -> bytes:
        frames = b"acks of %d" % len(settled) if settled else b""
        settled.clear()
        return frames

    batch.last = acks
    batch.add(b"publish")
    await asyncio.sleep(0)  # the writer queue is full: the flush waits for room
    stopping = asyncio.ensure_future(batch.written())
    await asyncio.sleep(0)
    settled.append(1)  # an ack and a frame while written() waits
    batch.add(b"more")
    payloads: list[bytes] = []
    while not stopping.done():
        frame = await asyncio.wait_for(queue.get(), 5)
        payloads.append(frame.payload)
        if frame.drain_future is not None:
            frame.drain_future.set_result(None)
            await asyncio.wait_for(stopping, 5)
    assert b"".join(payloads) == b"beforepublishmoreacks of 1"
