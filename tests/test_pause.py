"""Pausing a subscriber (contract section 9): every worker of it, plain or ordered, in any
number of processes, stops taking messages within seconds of the state written to
``<name>.control`` (messages published meanwhile stay ready), a worker restarted while paused
stays paused, in-flight messages finish, and a resume drains the queue."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from aiormq.abc import AbstractChannel

from bridge.amqp.control import (
    CONSUMING,
    EMPTY_RECHECKS,
    ControlState,
    read_state,
    write_state,
)
from bridge.amqp.topology import control_name, partition_queue_name, roster_name
from bridge.console import queues
from bridge.core.contract import EVENTS
from bridge.worker.message import Message
from bridge.worker.pause import POLL_INTERVAL
from bridge.worker.subscribers import load_subscribers
from tests.conftest import BrokerProbe
from tests.worker_helpers import (
    body_for,
    cancels_at_every_turn,
    publish,
    running_worker,
    start_worker_process,
    stop_worker_processes,
    subscriber,
    track_subscriber,
    unique_name,
    wait_until,
)

SEEN_WITHIN = 5.0 + POLL_INTERVAL
"""The contract's 5 seconds, plus one poll of slack for a loaded test machine."""


async def _set_paused(probe: BrokerProbe, name: str, paused: bool) -> ControlState:
    assert probe.connection is not None
    channel = await probe.connection.channel(publisher_confirms=True)
    try:
        return await write_state(channel, name, paused, "tester")
    finally:
        await channel.close()


async def _figures(probe: BrokerProbe, queue: str) -> tuple[int, int]:
    """(ready, consumers) of ``queue``."""
    channel = await probe._chan()
    ok = await channel.queue_declare(queue, passive=True)
    return int(ok.message_count or 0), int(ok.consumer_count or 0)


def _handled(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


async def _control_queue(probe: BrokerProbe, exchange: str) -> tuple[str, AbstractChannel]:
    """A new subscriber's name, its ``<name>.control`` declared (deleted after the test),
    and the probe's channel to read it on."""
    name = unique_name("control")
    sub = subscriber(name)
    track_subscriber(probe, exchange, sub)
    channel = await probe._chan()
    queue = next(q for q in sub.topology(exchange).queues if q.name == control_name(name))
    await channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
    return name, channel


async def test_the_state_survives_readers_and_a_newer_state_wins(
    probe: BrokerProbe, exchange: str
) -> None:
    """Reading leaves the state in place; a reader holding the old state while a new one is
    written never brings the old one back."""
    name, channel = await _control_queue(probe, exchange)
    assert await read_state(channel, name) == CONSUMING
    await _set_paused(probe, name, True)
    for _ in range(3):
        state = await read_state(channel, name)
        assert state.paused and state.operator == "tester"
    # A reader holds the pause unacked while the resume is written, then puts it back.
    got = await channel.basic_get(control_name(name), no_ack=False)
    await _set_paused(probe, name, False)
    assert got.delivery.delivery_tag is not None
    await channel.basic_reject(got.delivery.delivery_tag, requeue=True)
    assert not (await read_state(channel, name)).paused
    assert not (await read_state(channel, name)).paused
    # (A passive declare may count a requeued message a moment late.)
    await wait_until(lambda: _ready(probe, control_name(name), 1))


@pytest.mark.slow
async def test_two_worker_processes_pause_stay_paused_across_a_restart_and_resume(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    name = unique_name("pause")
    config = tmp_path / "subs.toml"
    config.write_text(
        f'[[subscriber]]\nname = "{name}"\nevents = ["*"]\n'
        'handler = "tests.worker_helpers:record"\nretry_delays = ["1s"]\n'
    )
    [sub] = load_subscribers(str(config))
    track_subscriber(probe, exchange, sub)
    log = tmp_path / "handled.log"
    outs = [(tmp_path / f"worker{i}.out").open("wb") for i in range(3)]
    workers = [start_worker_process(config, exchange, log, out) for out in outs[:2]]
    try:

        async def consumers(count: int) -> bool:
            for worker in workers:
                assert worker.poll() is None, (tmp_path / "worker0.out").read_text()
            try:
                return (await _figures(probe, name))[1] == count
            except Exception:  # not declared yet: the passive declare closed the channel
                return False

        await wait_until(lambda: consumers(2), timeout=30, interval=0.1)
        for n in range(4):
            await publish(probe, exchange, EVENTS[0], body_for(EVENTS[0], n))
        await wait_until(lambda: _handled(log) == 4, timeout=15)

        await _set_paused(probe, name, True)
        await wait_until(lambda: consumers(0), timeout=SEEN_WITHIN, interval=0.1)
        for n in range(4, 10):
            await publish(probe, exchange, EVENTS[0], body_for(EVENTS[0], n))
        await wait_until(lambda: _ready(probe, name, 6))

        # A worker restarted while paused reads the state before it consumes.
        workers[0].send_signal(signal.SIGTERM)
        assert workers[0].wait(timeout=20) == 0
        workers[0] = start_worker_process(config, exchange, log, outs[2])
        started = tmp_path / "worker2.out"
        await wait_until(
            lambda: "not consuming (paused)" in started.read_text(), timeout=30, interval=0.1
        )
        assert await _figures(probe, name) == (6, 0)
        assert _handled(log) == 4

        await _set_paused(probe, name, False)
        await wait_until(lambda: consumers(2), timeout=SEEN_WITHIN, interval=0.1)
        await wait_until(lambda: _handled(log) == 10, timeout=15)
        assert (await _figures(probe, name))[0] == 0
    finally:
        stop_worker_processes(workers)
        for out in outs:
            out.close()


async def _ready(probe: BrokerProbe, queue: str, count: int) -> bool:
    return (await _figures(probe, queue))[0] == count


async def test_an_in_flight_message_finishes_when_paused(probe: BrokerProbe, exchange: str) -> None:
    """The message in hand is handled and acked; the ones behind it wait in the queue."""
    sub = subscriber(prefetch=4, timeout=60.0)
    started, release = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    async def handler(message: Message) -> None:
        started.set()
        await release.wait()
        handled.append(message.message_id)

    async with running_worker(probe, exchange, [sub], {sub.name: handler}) as worker:
        [subscription] = worker.subscriptions
        first = await publish(probe, exchange, EVENTS[0], body_for(EVENTS[0], 0))
        await asyncio.wait_for(started.wait(), 10)
        await _set_paused(probe, sub.name, True)
        # (A quorum queue counts a cancelled consumer until its unacked messages settle.)
        await wait_until(lambda: subscription.gate.paused, timeout=SEEN_WITHIN)
        for n in range(1, 4):
            await publish(probe, exchange, EVENTS[0], body_for(EVENTS[0], n))
        release.set()
        await wait_until(lambda: handled == [first])
        await wait_until(lambda: _consumers(probe, sub.name, 0))
        await wait_until(lambda: _ready(probe, sub.name, 3))
        assert handled == [first]
        await _set_paused(probe, sub.name, False)
        await wait_until(lambda: len(handled) == 4, timeout=SEEN_WITHIN + 5)


async def _consumers(probe: BrokerProbe, queue: str, count: int) -> bool:
    return (await _figures(probe, queue))[1] == count


async def test_two_ordered_workers_release_every_partition_and_take_them_back(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber(ordered=True, partitions=2, delays=(100,))
    handled: list[str] = []

    async def handler(message: Message) -> None:
        handled.append(message.message_id)

    partitions = [partition_queue_name(sub.name, i) for i in range(sub.partitions)]

    async def all_partitions(consumed: bool) -> bool:
        # (A single-active-consumer queue may count only its active consumer.)
        counts = [(await _figures(probe, q))[1] for q in partitions]
        return all(counts) if consumed else not any(counts)

    async def ready() -> int:
        return sum([(await _figures(probe, q))[0] for q in partitions])

    handlers = {sub.name: handler}
    async with (
        running_worker(probe, exchange, [sub], handlers),
        running_worker(probe, exchange, [sub], handlers),
    ):
        await wait_until(lambda: _consumers(probe, roster_name(sub.name), 2), timeout=15)
        await wait_until(lambda: all_partitions(True))
        await publish(probe, exchange, EVENTS[0], body_for(EVENTS[0], 0))
        await wait_until(lambda: len(handled) == 1)
        await _set_paused(probe, sub.name, True)
        await wait_until(lambda: all_partitions(False), timeout=SEEN_WITHIN)
        for n in range(1, 9):
            await publish(probe, exchange, EVENTS[0], body_for(EVENTS[0], n))

        async def all_ready() -> bool:
            return await ready() == 8

        await wait_until(all_ready)
        assert len(handled) == 1
        await _set_paused(probe, sub.name, False)
        await wait_until(lambda: all_partitions(True), timeout=SEEN_WITHIN)
        await wait_until(lambda: len(handled) == 9)


async def test_a_reader_sees_the_pause_while_another_reader_holds_it(
    probe: BrokerProbe, exchange: str
) -> None:
    """Every worker reads the state with a get and a reject: for that moment the state is
    unacked and the queue looks empty to the others. A worker reading then must not take
    the empty queue for "never paused" (it would resume, mid-pause, until its next read)."""
    name, channel = await _control_queue(probe, exchange)
    await _set_paused(probe, name, True)
    assert probe.connection is not None
    other = await probe.connection.channel()
    try:
        held = await other.basic_get(control_name(name), no_ack=False)
        tag = held.delivery.delivery_tag
        assert tag is not None

        async def put_back() -> None:
            await asyncio.sleep(0.1)  # another worker's loop, slow to send its reject
            await other.basic_reject(tag, requeue=True)

        putting_back = asyncio.create_task(put_back())
        state = await read_state(channel, name)
        await putting_back
        assert state.paused and state.operator == "tester"
    finally:
        await other.close()


async def test_a_read_cancelled_at_any_point_is_cancelled(
    probe: BrokerProbe, exchange: str
) -> None:
    """The pause gate's poll is stopped by a cancel: a read that returned its answer instead
    (asyncio.wait_for on Python 3.11 does, when the answer comes with the cancel) left the
    gate polling and the worker's stop waiting on it for ever."""
    name, _ = await _control_queue(probe, exchange)
    await _set_paused(probe, name, True)
    assert probe.connection is not None
    cancelled, answered_anyway = await cancels_at_every_turn(
        probe.connection, lambda reader: read_state(reader, name)
    )
    assert cancelled > 0  # (else no cancel met a read in progress)
    assert answered_anyway == 0


async def test_the_console_reads_a_never_paused_state_once(
    probe: BrokerProbe, exchange: str
) -> None:
    """The workers read an empty ``<name>.control`` again before they consume; the console
    only shows it, for every subscriber on every page, and reads it once."""
    name, channel = await _control_queue(probe, exchange)
    counted = _CountedGets(channel)
    assert await read_state(counted, name) == CONSUMING  # type: ignore[arg-type]
    assert counted.gets == 1 + len(EMPTY_RECHECKS)  # a worker's read
    counted.gets = 0
    reader = queues._Reader(_OneChannel(counted))  # type: ignore[arg-type]
    assert await reader.control(name) == CONSUMING
    assert counted.gets == 1


class _CountedGets:
    """A channel that counts its ``basic.get`` calls."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self.gets = 0

    def basic_get(self, *args: Any, **kwargs: Any) -> Any:
        self.gets += 1
        return self.channel.basic_get(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)


class _OneChannel:
    """The part of a ConsoleBroker the console's reader uses: its read channel."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    async def read_channel(self) -> Any:
        return self.channel

    def read_channel_lost(self) -> None:
        raise AssertionError("the control queue exists")
