"""The one place that touches aiormq's private internals, typed, and checked before use.

The fast publish and ack paths (:mod:`bridge.amqp.pipeline`) write hand-built frames
straight to aiormq's write queue and do aiormq's publisher-confirm bookkeeping themselves.
That rests on these internals of ``aiormq.Channel`` (aiormq 7.x):

- ``delivery_tag``: the int counting publishes on the channel (the broker's confirm tags);
- ``confirmations``: dict tag -> future, settled by aiormq's reader on ``basic.ack`` /
  ``basic.nack`` / ``basic.return`` (we reject our own when the channel closes) through
  ``done``, ``cancelled``, ``set_result`` and ``set_exception`` alone: a publish whose
  outcome is only counted puts a :class:`Counted` there instead of a future;
- ``message_id_delivery_tag``: dict message id -> tag, how aiormq finds the publish a
  ``basic.return`` belongs to; ``on_return_raises`` / ``on_return_callbacks``;
- ``write_queue`` (the connection's queue of ``aiormq.abc.ChannelFrame(payload,
  should_close, drain_future)``), ``number``, ``max_content_size``;
- and that nobody else publishes on the channel, so its lock (held by ``basic_publish``
  around the same bookkeeping) can be skipped.

:func:`check` verifies all of it on the real channel (attribute types, the frame's fields,
and that aiormq's own ``basic_publish``, return and confirm handlers still use those
names) and returns why not when anything differs: callers then use aiormq's public API
(:func:`public_path_reason` also honours ``BRIDGE_PUBLISH_PATH=public``, an internal switch
for tests). A silent change of meaning in aiormq must never match a confirm to the wrong
message; a missing or changed internal costs speed, never correctness.

Identical webhooks share a message id, and aiormq matches a ``basic.return`` by message
id alone; the one twin policy for both paths is :mod:`bridge.amqp.publisher`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import types
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, TypeVar, cast

import aiormq
from aiormq.abc import AbstractChannel, ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError

log = logging.getLogger("bridge.amqp.aiormq_internals")

PATH_ENV = "BRIDGE_PUBLISH_PATH"
"""``public`` forces aiormq's public API; anything else (or unset) uses the fast path when
:func:`check` passes. Internal: for tests and for ruling the fast path out in an incident."""

AIORMQ_VERSION = version("aiormq")


def public_path_reason() -> str | None:
    """Why the public path is asked for by the environment, or ``None``."""
    if os.environ.get(PATH_ENV, "").strip().lower() == "public":
        return f"{PATH_ENV}=public"
    return None


def _names(code: types.CodeType) -> set[str]:
    """Every name a function's code uses, its nested functions included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _uses(function: Any, *names: str) -> bool:
    code = getattr(function, "__code__", None)
    return isinstance(code, types.CodeType) and set(names) <= _names(code)


_FRAME_FIELDS = ("payload", "should_close", "drain_future")

_CONFIRM_METHODS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "basic_publish",
        ("delivery_tag", "confirmations", "message_id_delivery_tag", "write_queue"),
        "no longer keeps the bookkeeping used here",
    ),
    (
        "_on_return_frame",
        (
            "message_id_delivery_tag",
            "confirmations",
            "on_return_callbacks",
            "on_return_raises",
            "set_result",
        ),
        "no longer matches returns as expected",
    ),
    (
        "_confirm_delivery",
        ("confirmations", "done", "cancelled", "set_result", "set_exception"),
        "no longer settles confirmations",
    ),
)
"""The channel's methods whose bookkeeping the fast publish takes over: each must still
name these attributes, or the problem says which no longer does."""


def _writes(ch: Any) -> list[str]:
    """What the batched writes need (publishes and acks alike)."""
    problems = []
    if not isinstance(ch, aiormq.Channel):
        problems.append(f"{type(ch).__name__} is not an aiormq.Channel")
    queue = getattr(ch, "write_queue", None)
    connection = getattr(ch, "connection", None)
    if not isinstance(queue, asyncio.Queue) or queue is not getattr(
        connection, "write_queue", None
    ):
        problems.append("Channel.write_queue is not its connection's asyncio.Queue")
    if type(getattr(ch, "number", None)) is not int:
        problems.append("Channel.number is not an int")
    if type(getattr(ch, "is_closed", None)) is not bool:
        problems.append("Channel.is_closed is not a bool")
    try:
        fields = tuple(f.name for f in dataclasses.fields(ChannelFrame))
    except TypeError:
        fields = ()
    if fields != _FRAME_FIELDS:
        problems.append(f"ChannelFrame fields are {fields}, not {_FRAME_FIELDS}")
    return problems


def check(channel: AbstractChannel) -> str | None:
    """``None`` if the fast publish path may use ``channel`` (a fresh confirm channel of an
    aiormq with exactly the internals listed above), else the first reason why not."""
    ch: Any = channel
    problems = _writes(ch)
    max_size = getattr(ch, "max_content_size", None)
    if type(max_size) is not int or max_size <= 0:
        problems.append("Channel.max_content_size is not a positive int")
    if getattr(ch, "publisher_confirms", None) is not True:
        problems.append("the channel is not in confirm mode")
    if type(getattr(ch, "delivery_tag", None)) is not int:
        problems.append("Channel.delivery_tag is not an int")
    elif ch.delivery_tag != 0:
        problems.append("the channel already counted publishes")
    confirmations = getattr(ch, "confirmations", None)
    if not isinstance(confirmations, dict) or confirmations:
        problems.append("Channel.confirmations is not an empty dict")
    if not isinstance(getattr(ch, "message_id_delivery_tag", None), dict):
        problems.append("Channel.message_id_delivery_tag is not a dict")
    if not isinstance(getattr(ch, "on_return_callbacks", None), set):
        problems.append("Channel.on_return_callbacks is not a set")
    if type(getattr(ch, "on_return_raises", None)) is not bool:
        problems.append("Channel.on_return_raises is not a bool")
    lock = getattr(ch, "_Channel__lock", None)
    if not isinstance(lock, asyncio.Lock) or lock.locked():
        problems.append("the channel's publish lock is missing or held")
    if not isinstance(getattr(ch, "closing", None), asyncio.Future):
        problems.append("Channel.closing is not a future")
    for method, names, problem in _CONFIRM_METHODS:
        if not _uses(getattr(type(ch), method, None), *names):
            problems.append(f"Channel.{method} {problem}")
    if problems:
        return f"aiormq {AIORMQ_VERSION}: {problems[0]}"
    return None


def check_acks(channel: AbstractChannel) -> str | None:
    """``None`` if batched ack frames may be written to ``channel``, else why not."""
    problems = _writes(channel)
    return f"aiormq {AIORMQ_VERSION}: {problems[0]}" if problems else None


_T = TypeVar("_T")


def per_channel(channel: AbstractChannel, name: str, make: Callable[[], _T]) -> _T:
    """The one ``make()`` of ``channel`` under ``name``, kept on the channel itself: it lives
    and dies with the channel (a registry keyed by channels would keep every one alive)."""
    attributes = vars(channel)
    kept: dict[str, Any] | None = attributes.get("_bridge_per_channel")
    if kept is None:
        kept = attributes["_bridge_per_channel"] = {}
    found = kept.get(name)
    if found is None:
        found = kept[name] = make()
    return cast(_T, found)


def kept(channel: AbstractChannel, name: str) -> Any:
    """What :func:`per_channel` keeps on ``channel`` under ``name`` (None: nothing yet)."""
    return (vars(channel).get("_bridge_per_channel") or {}).get(name)


def frame_batch(channel: AbstractChannel) -> FrameBatch:
    """The one :class:`FrameBatch` of ``channel``: publishes and acks share it, so frames
    leave in the order they were made (a delivery record before the ack after it)."""
    return per_channel(channel, "frames", lambda: FrameBatch(channel))


HOLD_SECONDS = 0.002
"""How long a channel's acks may wait for more to join them (:meth:`FrameBatch._hold`)."""


class FrameBatch:
    """Frames for one channel, handed to aiormq's writer as one buffer per loop turn (or
    per hold, on a consumer's channel: :meth:`_hold`);
    ``last``, when set, gives the frames that end each buffer (the turn's acks), and
    ``before_last``, when set, runs just before it and may :meth:`add` frames (the turn's
    delivery records, which must leave before the acks of the messages they describe)."""

    def __init__(self, channel: AbstractChannel) -> None:
        ch: Any = channel
        self.channel = channel
        self.number: int = ch.number
        self._queue: asyncio.Queue[ChannelFrame] = ch.write_queue
        self._buffer: list[bytes] = []
        self._scheduled = False
        self._putting: asyncio.Task[None] | None = None
        self.last: Callable[[], bytes] | None = None
        self.before_last: Callable[[], None] | None = None
        self.waiting: Callable[[], int] | None = None
        """How many settlements ``last`` holds (the acks in hand; see :meth:`_hold`)."""
        self.hold_run = 1
        """Acks in hand that end a hold at once (1: acks never wait; see :meth:`_hold`)."""
        self._hold_timer: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        return bool(self.channel.is_closed)

    def add(self, frames: bytes) -> None:
        self._buffer.append(frames)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def due(self) -> None:
        """``last`` has frames to give: write them at the end of this loop turn."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _take_last(self) -> None:
        if self.before_last is not None:
            self.before_last()
        if self.last is not None:
            frames = self.last()
            if frames:
                self._buffer.append(frames)

    async def written(self) -> None:
        """Wait until every frame added so far was written to the socket (unbounded: the
        caller bounds it; a dead connection never writes)."""
        self._take_last()
        while self._putting is not None or self._buffer:
            if self._putting is not None:
                await asyncio.shield(self._putting)
            else:
                self._flush(hold=False)  # acks settled meanwhile go now: nothing waits here
        drain: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(ChannelFrame(payload=b"", should_close=False, drain_future=drain))
        await drain

    def discard(self) -> None:
        """Forget what is buffered (the channel is gone)."""
        self._end_hold()
        if self.before_last is not None:
            self.before_last()  # the turn's records: sent into the buffer, failed with it
        if self.last is not None:
            self.last()  # the turn's acks, dropped with the rest
        self._buffer = []
        if self._putting is not None:
            self._putting.cancel()
            self._putting = None

    def _hold(self) -> bool:
        """Whether this flush waits: while fewer than :attr:`hold_run` acks are in hand,
        they (and whatever else the buffer holds) wait up to :data:`HOLD_SECONDS` for
        more, so one multiple ack and one message of delivery records cover more
        deliveries (the broker's cost is per message on the records' stream). A consumer
        sets :attr:`hold_run` to three quarters of its prefetch, so the broker can go on
        delivering the last quarter meanwhile; a lone ack leaves :data:`HOLD_SECONDS`
        later."""
        waiting = 0 if self.waiting is None else self.waiting()
        if waiting == 0 or waiting >= self.hold_run:
            return False
        if self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self._hold_ended)
        self._scheduled = False  # the next ack looks again: a full run need not wait
        return True

    def _hold_ended(self) -> None:
        self._hold_timer = None
        self._flush(hold=False)

    def _end_hold(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _flush(self, hold: bool = True) -> None:
        """Hand the buffer (with ``before_last`` and ``last``'s frames) to aiormq's writer;
        with ``hold``, unless :meth:`_hold` lets it wait."""
        if hold and self._hold():
            return
        self._end_hold()
        try:
            self._take_last()  # what ``before_last`` adds goes in this buffer: no second flush
        finally:
            self._scheduled = False
        if not self._buffer or self._putting is not None:
            return
        frame = ChannelFrame(payload=b"".join(self._buffer), should_close=False)
        self._buffer = []
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            # aiormq's writer is behind (a blocked connection): wait for room, keeping order.
            self._putting = asyncio.get_running_loop().create_task(self._put(frame))

    async def _put(self, frame: ChannelFrame) -> None:
        await self._queue.put(frame)
        self._putting = None
        if self._buffer and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)


@dataclasses.dataclass(slots=True, eq=False)
class Pending:
    """One publish awaiting its confirm (on the public path ``future`` is the task of
    aiormq's ``basic_publish``, ``tag`` 0): ``returned`` is set when a ``basic.return`` for
    its message id arrived while it was unconfirmed."""

    tag: int
    message_id: str
    future: asyncio.Future[Any]
    confirmations: dict[int, asyncio.Future[Any]] = dataclasses.field(repr=False)
    """The channel's futures by delivery tag (aiormq's), where :meth:`expire` leaves one."""
    returned: bool = dataclasses.field(default=False, init=False)

    def expire(self) -> None:
        """Give up waiting (the timeout): cancel the future, leaving aiormq a live one in
        its place, since aiormq's reader errors on settling a cancelled one on a return."""
        if self.confirmations.get(self.tag) is self.future:
            stand_in: asyncio.Future[Any] = self.future.get_loop().create_future()
            stand_in.add_done_callback(_read_outcome)  # nobody awaits it
            self.confirmations[self.tag] = stand_in
        self.future.cancel()


@dataclasses.dataclass(slots=True, eq=False)
class Counted:
    """A publish whose outcome is only counted (a delivery record), standing in aiormq's
    confirmations for the future a publish usually has: aiormq's reader settles it with
    the same calls (``done``, ``cancelled``, ``set_result``, ``set_exception``, checked by
    :func:`check`), and each one is passed to ``settled(counted, result, error)`` at once,
    without a future, a done callback or a timer of its own (``result``: the
    ``basic.ack`` frame, or the returned message; ``error``: a nack's ``DeliveryError``,
    or why the channel closed). Nothing awaits it: give up on it with :meth:`expire`."""

    tag: int
    message_id: str
    deadline: float
    settled: Callable[[Counted, object, BaseException | None], None]
    over: bool = dataclasses.field(default=False, init=False)
    """Settled or given up on: what aiormq reads later is ignored."""

    def done(self) -> bool:
        return self.over

    def cancelled(self) -> bool:
        # aiormq logs a late confirm of a done confirmation at DEBUG when it was cancelled
        # (given up on here), else at WARNING (which cannot happen: settled once).
        return self.over

    def set_result(self, result: object) -> None:
        if not self.over:
            self.over = True
            self.settled(self, result, None)

    def set_exception(self, error: BaseException) -> None:
        if not self.over:
            self.over = True
            self.settled(self, None, error)

    def expire(self) -> bool:
        """Give up on it (the caller counts it timed out); False if already settled."""
        if self.over:
            return False
        self.over = True
        return True


class FastChannel:
    """Publishes on one channel through aiormq's bookkeeping (see the module docstring);
    must be the only publisher on the channel. Build it only after :func:`check` passed.

    Which twin came back is not its business: :class:`bridge.amqp.publisher.Confirms`
    keeps the publishes of one message id together and marks them returned."""

    def __init__(self, channel: AbstractChannel) -> None:
        ch: Any = channel
        self._ch = ch
        self.channel = channel
        self.number: int = ch.number
        self.max_body_frame: int = ch.max_content_size
        self._batch = frame_batch(channel)
        self._confirmations: dict[int, asyncio.Future[Any]] = ch.confirmations
        self._ids: dict[str, int] = ch.message_id_delivery_tag
        self._loop = asyncio.get_running_loop()
        # Confirmations are plain futures, not aiormq's (its create_future adds three done
        # callbacks per publish, for its futures' store): when the channel closes, the
        # ones still unsettled are rejected here instead.
        channel.closing.add_done_callback(self._closed)

    @property
    def closed(self) -> bool:
        return bool(self._ch.is_closed)

    def publish(self, frames: bytes, message_id: str) -> Pending:
        """Take the next delivery tag, register its confirmation, queue ``frames``."""
        ch = self._ch
        ch.delivery_tag += 1
        tag: int = ch.delivery_tag
        future: asyncio.Future[Any] = self._loop.create_future()
        self._confirmations[tag] = future
        # aiormq needs some unconfirmed tag of this id to hand a return to our callback.
        self._ids[message_id] = tag
        self._batch.add(frames)
        return Pending(tag, message_id, future, self._confirmations)

    def publish_counted(
        self,
        frames: bytes,
        message_id: str,
        deadline: float,
        settled: Callable[[Counted, object, BaseException | None], None],
    ) -> Counted:
        """As :meth:`publish`, for a publish whose outcome is only counted (its message id
        unique: no twins); call :meth:`forget` once it is settled or given up on."""
        ch = self._ch
        ch.delivery_tag += 1
        tag: int = ch.delivery_tag
        counted = Counted(tag, message_id, deadline, settled)
        self._confirmations[tag] = counted  # type: ignore[assignment]
        self._ids[message_id] = tag
        self._batch.add(frames)
        return counted

    def forget(self, counted: Counted) -> None:
        """aiormq no longer needs ``counted``'s message id (for a return)."""
        if self._ids.get(counted.message_id) == counted.tag:
            del self._ids[counted.message_id]

    def finish(self, pending: Pending, twin: Pending | None) -> None:
        """The publisher is done with ``pending`` (settled, timed out or cancelled);
        ``twin`` is an unfinished publish of the same message id, if any."""
        if pending.future.cancelled():  # its task was cancelled: as for a timeout
            pending.expire()
        if twin is None:
            if self._ids.get(pending.message_id) == pending.tag:
                del self._ids[pending.message_id]
        elif self._ids.get(pending.message_id) == pending.tag:
            self._ids[pending.message_id] = twin.tag

    def discard(self) -> None:
        """The channel is replaced: drop unsent frames (their confirms fail with it)."""
        self._batch.discard()

    def _closed(self, closing: asyncio.Future[Any]) -> None:
        reason = None if closing.cancelled() else closing.exception()
        for future in list(self._confirmations.values()):
            if isinstance(future, asyncio.Future | Counted) and not future.done():
                future.set_exception(
                    reason or ChannelInvalidStateError("the channel closed before the confirm")
                )


def _read_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # read, so asyncio never logs it as never retrieved


class _NoCustomerData(logging.Filter):
    """aiormq logs a return it cannot match (one we already gave up on) with the whole
    message, body included: keep the record, without the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Unhandled message %r returning" and record.args:
            message = record.args[0] if isinstance(record.args, tuple) else None
            header = getattr(message, "header", None)
            message_id = getattr(getattr(header, "properties", None), "message_id", None)
            record.msg = "a basic.return for message id %s came after its publish gave up"
            record.args = (message_id,)
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("aiormq.channel").addFilter(_NoCustomerData())
