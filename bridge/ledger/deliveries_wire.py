"""Stream deliveries parsed straight from the AMQP 0-9-1 bytes, for the ledger's consumer.

aiormq turns every delivery into three frames parsed by pamqp, three queue hops, a
``DeliveredMessage`` and a task of its own: about half of the indexer's CPU. A
:class:`FrameSplitter` sits between the socket and aiormq instead
(:mod:`bridge.ledger.consumer` puts it there): the ``basic.deliver`` frames of the channels
it was asked to take, with their content header and body frames, are parsed here with
``struct`` and handed to that channel's callback as :class:`Delivery` objects; every other
frame (channel 0, other channels, every other method) is handed on to aiormq byte for byte,
in order.

Pure: no I/O, no asyncio. How it fails: bytes that are not AMQP frames (a frame end that is
not 0xCE, an unknown frame type, the broker's protocol header) or a delivery it cannot read
set :attr:`FrameSplitter.broken`, and from then on it hands on everything unparsed: before
any frame was read (the broker's protocol header) aiormq reports the error as it always
did; later its owner drops the connection, since a delivery may be half taken (the next
connection reads on from the last offset taken, so nothing is skipped). A headers table
with a field type other than the common ones is decoded by pamqp, as aiormq would.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pamqp import decode as pamqp_decode

Consumer = Callable[["Delivery"], None]

FRAME_END: Final = 0xCE
METHOD, HEADER, BODY, HEARTBEAT = 1, 2, 3, 8
HEARTBEAT_FRAME: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"
_HEAD = struct.Struct(">BHI")
_DELIVER = b"\x00\x3c\x00\x3c"  # class 60 (basic), method 60 (deliver)
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_I32 = struct.Struct(">i")
_HEADER_FIXED = struct.Struct(">HHQH")  # class, weight, body size, first property flags

STREAM_OFFSET: Final = "x-stream-offset"


@dataclass(slots=True, eq=False, repr=False)
class Delivery:
    """One message of a stream consumer: what the ledger reads of it."""

    tag: int
    routing_key: str
    message_id: str | None = None
    type: str | None = None
    stamp: int | None = None
    """The ``timestamp`` property as sent (Unix seconds; read as a time only when used)."""
    headers: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""

    @property
    def timestamp(self) -> datetime | None:
        """The ``timestamp`` property as pamqp reads it (aware UTC), ``None`` when absent."""
        return None if self.stamp is None else stamp_time(self.stamp)

    @property
    def offset(self) -> int:
        """The stream offset the broker put on the delivery (-1 when none)."""
        offset = self.headers.get(STREAM_OFFSET, -1)
        return offset if type(offset) is int else -1

    def __repr__(self) -> str:  # never the body or headers: customer data
        return f"Delivery(tag={self.tag}, offset={self.offset}, message_id={self.message_id!r})"


class _Partial:
    __slots__ = ("delivery", "parts", "received", "size")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.size = -1  # body size, once the content header came
        self.received = 0
        self.parts: list[bytes] = []


class FrameSplitter:
    """Splits the bytes read from one connection: deliveries of the channels taken go to
    their consumers, everything else is returned by :meth:`feed` to be handed on."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._consumers: dict[int, Consumer] = {}
        self._partial: dict[int, _Partial] = {}
        self.broken = False
        self.frames = 0  # frames read (handed on or taken)
        self.taken = 0  # deliveries parsed here

    def take(self, channel: int, consumer: Consumer) -> None:
        """Parse the deliveries of ``channel`` here, calling ``consumer`` with each, in
        order (call it before ``basic.consume`` is sent)."""
        self._consumers[channel] = consumer

    def drop(self, channel: int, consumer: Consumer | None = None) -> None:
        """Hand ``channel``'s frames on again (it closed: its number may be reused);
        with ``consumer``, only if that is still the one taking it."""
        if consumer is None or self._consumers.get(channel) is consumer:
            self._consumers.pop(channel, None)
            self._partial.pop(channel, None)

    def feed(self, data: bytes) -> bytes:
        """Take ``data`` read from the socket; the bytes to hand on (whole frames only)."""
        if self.broken:
            return data
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        consumers = self._consumers
        handed: list[bytes] = []
        run = 0  # start of the frames to hand on that are not yet in ``handed``
        position = 0
        while size - position >= 8:
            kind, channel, length = _HEAD.unpack_from(buffer, position)
            if kind not in (METHOD, HEADER, BODY, HEARTBEAT):
                return self._give_up(handed, run)
            end = position + 7 + length
            if end >= size:
                break  # the frame is not complete yet
            if buffer[end] != FRAME_END:
                return self._give_up(handed, run)
            consumer = consumers.get(channel)
            if consumer is not None:
                try:
                    taken = self._frame(channel, kind, buffer, position + 7, end, consumer)
                except (ValueError, IndexError, UnicodeDecodeError, struct.error):
                    return self._give_up(handed, run)
                if taken:
                    if run < position:
                        handed.append(bytes(buffer[run:position]))
                    run = end + 1
            position = end + 1
            self.frames += 1
        if run < position:
            handed.append(bytes(buffer[run:position]))
        del buffer[:position]
        return b"".join(handed)

    def _give_up(self, handed: list[bytes], run: int) -> bytes:
        """Not AMQP as expected: hand on everything from ``run``, and all later bytes."""
        self.broken = True
        handed.append(bytes(self._buffer[run:]))
        self._buffer = bytearray()
        self._consumers.clear()
        self._partial.clear()
        return b"".join(handed)

    def _frame(
        self, channel: int, kind: int, buffer: bytearray, start: int, end: int, consumer: Consumer
    ) -> bool:
        """Take one frame of a taken channel; ``False`` to hand it on instead."""
        partial = self._partial.get(channel)
        if kind == METHOD:
            if partial is not None or buffer[start : start + 4] != _DELIVER:
                return False  # another method (consume-ok, cancel, close...): aiormq's
            self._partial[channel] = _Partial(_deliver(buffer, start + 4))
            return True
        if partial is None:
            return False  # content of a method handed on (a return, a get-ok)
        if kind == HEADER:
            if partial.size >= 0:
                raise ValueError("a second content header")
            partial.size = _content_header(partial.delivery, buffer, start, end)
        elif kind == BODY:
            if partial.size < 0:
                raise ValueError("a body frame before its content header")
            partial.parts.append(bytes(buffer[start:end]))
            partial.received += end - start
        else:
            return False
        if partial.size >= 0 and partial.received >= partial.size:
            del self._partial[channel]
            delivery = partial.delivery
            parts = partial.parts
            delivery.body = parts[0] if len(parts) == 1 else b"".join(parts)
            self.taken += 1
            consumer(delivery)
        return True


def _short(buffer: bytearray, position: int) -> tuple[str, int]:
    length = buffer[position]
    start = position + 1
    return buffer[start : start + length].decode(), start + length


def _deliver(buffer: bytearray, position: int) -> Delivery:
    """``basic.deliver``'s arguments after class and method: consumer tag, delivery tag,
    redelivered, exchange, routing key."""
    position += 1 + buffer[position]  # consumer tag
    (tag,) = _U64.unpack_from(buffer, position)
    position += 9  # delivery tag, redelivered
    position += 1 + buffer[position]  # exchange
    routing_key, _ = _short(buffer, position)
    return Delivery(tag, routing_key)


def _content_header(delivery: Delivery, buffer: bytearray, start: int, end: int) -> int:
    """Fill ``delivery``'s properties from a content header frame; the body size."""
    _class, _weight, size, flags = _HEADER_FIXED.unpack_from(buffer, start)
    position = start + 14
    more = flags
    while more & 1:  # a continued flags word: none is defined for basic
        (more,) = _U16.unpack_from(buffer, position)
        position += 2
    position = _skip_short(buffer, position, flags, _TYPE_AND_ENCODING)
    if flags & 0x2000:  # headers
        (length,) = _U32.unpack_from(buffer, position)
        delivery.headers = _table(buffer, position + 4, position + 4 + length)
        position += 4 + length
    position += bool(flags & 0x1000) + bool(flags & 0x0800)  # delivery mode, priority: octets
    position = _skip_short(buffer, position, flags, _UNREAD_STRINGS)
    if flags & 0x0080:  # message id
        delivery.message_id, position = _short(buffer, position)
    if flags & 0x0040:  # timestamp
        (delivery.stamp,) = _U64.unpack_from(buffer, position)
        position += 8
    if flags & 0x0020:  # type
        delivery.type, position = _short(buffer, position)
    # user id, app id, cluster id: not read
    if position > end:
        raise ValueError("a content header longer than its frame")
    return int(size)


_TYPE_AND_ENCODING: Final = (0x8000, 0x4000)  # content type, content encoding
_UNREAD_STRINGS: Final = (0x0400, 0x0200, 0x0100)  # correlation id, reply to, expiration


def _skip_short(buffer: bytearray, position: int, flags: int, bits: tuple[int, ...]) -> int:
    """Past the short strings of the properties in ``bits`` that ``flags`` has."""
    for bit in bits:
        if flags & bit:
            position += 1 + buffer[position]
    return position


def stamp_time(stamp: int) -> datetime:
    """A ``timestamp`` property as a time."""
    # As pamqp reads it: past the year 2106 it is taken for milliseconds.
    return datetime.fromtimestamp(stamp / 1000.0 if stamp > 0xFFFFFFFF else stamp, tz=UTC)


def _table(buffer: bytearray, position: int, end: int) -> dict[str, Any]:
    """A field table of long strings and integers, as pamqp decodes them; any other field
    type: the whole table by pamqp."""
    table: dict[str, Any] = {}
    start = position
    while position < end:
        length = buffer[position]
        name = buffer[position + 1 : position + 1 + length].decode()
        position += 1 + length
        kind = buffer[position]
        position += 1
        if kind == 0x53:  # S: long string (text, or bytes when not UTF-8, as pamqp)
            (size,) = _U32.unpack_from(buffer, position)
            raw = bytes(buffer[position + 4 : position + 4 + size])
            position += 4 + size
            try:
                table[name] = raw.decode()
            except UnicodeDecodeError:
                table[name] = raw
        elif kind == 0x6C:  # l: signed 64 bits (x-stream-offset)
            (table[name],) = _I64.unpack_from(buffer, position)
            position += 8
        elif kind == 0x49:  # I: signed 32 bits
            (table[name],) = _I32.unpack_from(buffer, position)
            position += 4
        else:
            whole = bytes(_U32.pack(end - start)) + bytes(buffer[start:end])
            return dict(pamqp_decode.field_table(whole)[1])
    if position != end:
        raise ValueError("a headers table longer than its size")
    return table
