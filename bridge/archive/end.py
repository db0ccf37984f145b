"""Reading the archive stream up to its end, over AMQP 0-9-1, which has no end-of-stream
signal: a consumer at the end of a stream simply waits.

How it ends: before consuming, an empty *sentinel* message with a fresh id is published
with a confirm straight into the stream (through the default exchange, so no subscriber
queue sees it). A confirm on a stream means committed (on a cluster, by a quorum), so every
message committed before the read started sits at a lower offset. The read stops when its
own sentinel comes back; sentinels of earlier reads are skipped. This is exact on an empty
stream, on one cut by retention, and while the receiver keeps writing.

A read that must not write (a console page: a GET writes nothing) passes ``writes=False``
instead: RabbitMQ 3.10 offers no end-of-stream signal and no exact committed offset over
AMQP 0-9-1 (a passive declare's message count is statistics, seconds late), so a second
consumer attaches at ``"last"`` (the first offset of the stream's last
chunk), takes that chunk's burst of deliveries until :data:`TAIL` seconds pass without one,
and the read stops at the highest offset seen. Exact for everything committed before the
read started, save a chunk whose delivery stalls longer than ``TAIL``; what is appended
while it reads may or may not be included.

How it fails: a missing archive is a :class:`CommandError` naming the fix; so is a broker
that does not answer a call within :data:`RPC_TIMEOUT`, and a read that receives nothing
for ``idle`` seconds before its sentinel (never reported as a complete read).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp.commands import Basic

from bridge.amqp.connection import close_quietly
from bridge.amqp.publisher import Outcome, confirms
from bridge.core.contract import HEADER_ARCHIVE_SENTINEL
from bridge.core.tasks import within
from bridge.errors import CommandError

T = TypeVar("T")

RPC_TIMEOUT = 10.0
"""Seconds one broker call may take before the command gives up with one line."""
PREFETCH = 2000
"""Stream consumers need a prefetch; acks (every half of it) only give credit back."""
IDLE = 30.0
"""Seconds without a delivery after which a read is declared incomplete."""
SENTINEL_TYPE = "archive.sentinel"
TAIL = 0.3
"""Seconds without a delivery that end the burst of the stream's last chunk."""
STREAM_OFFSET_HEADER = "x-stream-offset"

StreamOffset = str | int | datetime
"""Where a read attaches: ``"first"``, ``"last"``, an offset, or an aware datetime (the
stream's chunk arrival time, whole seconds)."""


async def bounded(call: Awaitable[T], what: str) -> T:
    """``call``, or a :class:`CommandError` if the broker has not answered in time."""
    try:
        return await within(RPC_TIMEOUT, call)
    except TimeoutError:
        raise CommandError(
            f"the broker did not answer {what} within {RPC_TIMEOUT:.0f} s: check its health "
            "(rabbitmqctl status) and its memory and disk alarms, then run it again"
        ) from None


def missing_archive(stream: str) -> CommandError:
    return CommandError(
        f"the archive {stream} does not exist: set BRIDGE_ARCHIVE=true and run "
        "`mintsoft-bridge topology` (serve declares it too), or check BRIDGE_EXCHANGE"
    )


async def require_stream(connection: AbstractConnection, stream: str) -> int:
    """The stream's approximate message count (broker stats: offsets, lagging a few
    seconds); a :class:`CommandError` if it does not exist."""
    channel = await bounded(connection.channel(), "opening a channel")
    try:
        ok = await bounded(channel.queue_declare(stream, passive=True), "a passive declare")
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        if "down or inaccessible" in str(exc):  # a node restarting: the stream recovers
            raise CommandError(
                f"the archive {stream} is not available yet (its node is down or still "
                "recovering it): run this again in a moment"
            ) from None
        raise missing_archive(stream) from None
    await close_quietly(channel)
    return int(ok.message_count or 0)


async def write_sentinel(connection: AbstractConnection, stream: str) -> str:
    """Append a sentinel to ``stream``, confirmed; its id."""
    sentinel = uuid.uuid4().hex
    channel = await bounded(
        connection.channel(publisher_confirms=True, on_return_raises=True), "opening a channel"
    )
    try:
        outcome = await confirms(channel).publish(
            b"",
            routing_key=stream,
            properties=Basic.Properties(
                headers={HEADER_ARCHIVE_SENTINEL: sentinel},
                message_type=SENTINEL_TYPE,
                delivery_mode=2,
            ),
            timeout=RPC_TIMEOUT,
        )
    finally:
        await close_quietly(channel)
    if outcome is Outcome.RETURNED:
        raise missing_archive(stream)
    if outcome is Outcome.TIMED_OUT:
        raise CommandError(
            f"the broker did not confirm the end marker's publish within {RPC_TIMEOUT:.0f} s: "
            "check its health (rabbitmqctl status) and its memory and disk alarms, then run "
            "it again"
        )
    if outcome is not Outcome.CONFIRMED:
        raise CommandError(
            f"the broker refused to append to {stream} ({outcome}): check its "
            "disk alarm and the user's write permission on the queue"
        )
    return sentinel


def offset_of(message: DeliveredMessage) -> int:
    """The stream offset RabbitMQ put on a delivery (-1 if none)."""
    offset = (message.header.properties.headers or {}).get(STREAM_OFFSET_HEADER, -1)
    return offset if isinstance(offset, int) else -1


async def _last_offset(connection: AbstractConnection, stream: str, tail: float) -> int | None:
    """The highest offset of the stream's last chunk, as a consumer at ``"last"`` gets it;
    ``None`` for an empty stream."""
    channel, tag, inbox = await _consume(connection, stream, "last", PREFETCH)
    highest: int | None = None
    try:
        while (message := await _next(inbox, tail)) is not None:
            highest = max(highest if highest is not None else -1, offset_of(message))
        return highest
    finally:
        await _stop(channel, tag)


async def _next(inbox: asyncio.Queue[DeliveredMessage], wait: float) -> DeliveredMessage | None:
    """The consumer's next delivery; ``None`` when none comes within ``wait`` seconds."""
    try:
        return await within(wait, inbox.get())
    except TimeoutError:
        return None


async def _deliveries(
    stream: str,
    channel: AbstractChannel,
    tag: str,
    inbox: asyncio.Queue[DeliveredMessage],
    prefetch: int,
    idle: float,
    is_last: Callable[[DeliveredMessage], bool],
) -> AsyncGenerator[DeliveredMessage, None]:
    """Each delivery of a stream consumer up to the one ``is_last`` picks (included), acked
    as it goes; the consumer is cancelled and its channel closed at the end."""
    ack_every = max(1, prefetch // 2)
    unacked = 0
    try:
        while True:
            message = await _next(inbox, idle)
            if message is None:
                raise CommandError(
                    f"{stream} delivered nothing for {idle:.0f} s before its end: the read is "
                    "incomplete; check the broker's health and run it again"
                )
            yield message
            if is_last(message):
                return
            unacked += 1
            if unacked >= ack_every:
                assert message.delivery_tag is not None
                await channel.basic_ack(message.delivery_tag, multiple=True)
                unacked = 0
    finally:
        await _stop(channel, tag)


async def _stop(channel: AbstractChannel, tag: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await channel.basic_cancel(tag)
            await channel.close()


def sentinel_of(message: DeliveredMessage) -> str | None:
    headers = message.header.properties.headers or {}
    mark = headers.get(HEADER_ARCHIVE_SENTINEL)
    if mark is None:
        return None
    return bytes(mark).decode() if isinstance(mark, bytes | bytearray) else str(mark)


async def _consume(
    connection: AbstractConnection, stream: str, start: StreamOffset, prefetch: int
) -> tuple[AbstractChannel, str, asyncio.Queue[DeliveredMessage]]:
    channel = await bounded(connection.channel(), "opening a channel")
    await bounded(channel.basic_qos(prefetch_count=prefetch), "basic.qos")
    inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()  # bounded by the prefetch

    async def deliver(message: DeliveredMessage) -> None:
        inbox.put_nowait(message)

    # no_ack must be False on a stream: True closes the whole connection.
    ok = await bounded(
        channel.basic_consume(stream, deliver, no_ack=False, arguments={"x-stream-offset": start}),
        "basic.consume",
    )
    assert ok.consumer_tag is not None
    return channel, ok.consumer_tag, inbox


async def read_to_end(
    connection: AbstractConnection,
    stream: str,
    start: StreamOffset,
    *,
    prefetch: int = PREFETCH,
    idle: float = IDLE,
    writes: bool = True,
) -> AsyncGenerator[DeliveredMessage, None]:
    """Every message of ``stream`` from ``start`` to its end as of the call, in offset
    order, sentinels left out. The end is the sentinel this read writes (exact), or, with
    ``writes=False``, the highest offset of the stream's last chunk (see the module's
    docstring)."""
    sentinel = await write_sentinel(connection, stream) if writes else None
    last = None if writes else await _last_offset(connection, stream, TAIL)
    if not writes and last is None:
        return  # an empty stream

    def is_last(message: DeliveredMessage) -> bool:
        if last is None:
            return sentinel_of(message) == sentinel
        return offset_of(message) >= last

    consumer = await _consume(connection, stream, start, prefetch)
    reading = _deliveries(stream, *consumer, prefetch, idle, is_last)
    async with contextlib.aclosing(reading):
        async for message in reading:
            if sentinel_of(message) is None and (last is None or offset_of(message) <= last):
                yield message
