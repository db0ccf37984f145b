"""The ledger consumer's frame splitter against pamqp's own marshalling: deliveries of the
taken channels come out as aiormq would have read them, every other frame is handed on byte
for byte and in order, whatever the socket's chunks; bytes that are not AMQP are handed on
whole."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header
from pamqp.body import ContentBody
from pamqp.commands import Basic, Channel
from pamqp.heartbeat import Heartbeat

from bridge.core.records import RecordError
from bridge.ledger.deliveries_wire import HEARTBEAT_FRAME, Delivery, FrameSplitter
from bridge.ledger.rows import attempt_row, deliveries_rows
from tests.support.ledger_streams import record


def deliver(
    channel: int,
    tag: int,
    body: bytes,
    *,
    headers: dict[str, Any] | None = None,
    routing_key: str = "bench.archive",
    message_id: str | None = "m-1",
    max_frame: int = 131_072,
    **properties: Any,
) -> bytes:
    method = Basic.Deliver("ctag1.abc", tag, False, "", routing_key)
    props = Basic.Properties(headers=headers, message_id=message_id, **properties)
    parts = [
        pamqp_frame.marshal(method, channel),
        pamqp_frame.marshal(pamqp_header.ContentHeader(0, len(body), props), channel),
    ]
    for start in range(0, len(body), max_frame):
        parts.append(pamqp_frame.marshal(ContentBody(body[start : start + max_frame]), channel))
    return b"".join(parts)


def long_header(name: str, value: int) -> bytes:
    """A headers table entry of type ``l`` (signed 64 bits), as RabbitMQ writes offsets."""
    raw = name.encode()
    return bytes([len(raw)]) + raw + b"l" + struct.pack(">q", value)


def with_offset_table(frames: bytes, channel: int, offset: int) -> bytes:
    """``frames`` (one delivery) with its content header rebuilt around a raw ``l`` table."""
    method_end = 7 + struct.unpack_from(">I", frames, 3)[0] + 1
    header_len = struct.unpack_from(">I", frames, method_end + 3)[0]
    body = frames[method_end + 7 + header_len + 1 :]
    table = long_header("x-stream-offset", offset)
    payload = struct.pack(">HHQH", 60, 0, 3, 0x2000 | 0x0080) + struct.pack(">I", len(table))
    payload += table + b"\x03m-9"
    header = struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce"
    return frames[:method_end] + header + body


def split(data: bytes, chunk: int, taken: dict[int, list[Delivery]]) -> tuple[bytes, FrameSplitter]:
    splitter = FrameSplitter()
    for channel, sink in taken.items():
        splitter.take(channel, sink.append)
    handed = b"".join(splitter.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    return handed, splitter


CHUNKS = [1, 7, 100, 4096, 1 << 20]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_deliveries_of_taken_channels_come_out_as_pamqp_reads_them(chunk: int) -> None:
    stamp = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    headers = {
        "x-event": "despatched",
        "x-order-id": "20285",
        "x-stream-offset": 3_000_000_000,  # pamqp writes it as "l"
        "x-small": 7,  # "b": the table is decoded by pamqp as a whole
        "x-nested": {"a": "b"},
    }
    big = bytes(range(256)) * 1200  # three body frames of 131,072 bytes at most
    data = b"".join(
        [
            deliver(2, 1, b'{"ID": 1}', headers=headers, timestamp=stamp, message_type="ship"),
            deliver(2, 2, big, headers={"x-stream-offset": 3_000_000_001}),
            deliver(2, 3, b"", headers={"x-stream-offset": 3_000_000_002}, message_id=None),
        ]
    )
    got: list[Delivery] = []
    handed, splitter = split(data, chunk, {2: got})
    assert handed == b"" and splitter.taken == 3 and not splitter.broken
    first, second, third = got
    assert (first.tag, first.routing_key, first.message_id, first.type) == (
        1,
        "bench.archive",
        "m-1",
        "ship",
    )
    assert first.headers == headers and first.timestamp == stamp and first.body == b'{"ID": 1}'
    assert first.offset == 3_000_000_000
    assert (second.tag, second.body, second.offset) == (2, big, 3_000_000_001)
    assert (third.body, third.message_id, third.offset) == (b"", None, 3_000_000_002)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_rabbitmq_offset_table_is_read_without_pamqp(chunk: int) -> None:
    data = with_offset_table(deliver(1, 9, b"abc"), 1, 123_456)
    got: list[Delivery] = []
    handed, _ = split(data, chunk, {1: got})
    assert handed == b""
    (delivery,) = got
    assert delivery.headers == {"x-stream-offset": 123_456} and delivery.offset == 123_456
    assert (delivery.message_id, delivery.body, delivery.tag) == ("m-9", b"abc", 9)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_every_other_frame_is_handed_on_byte_for_byte_in_order(chunk: int) -> None:
    others = [
        pamqp_frame.marshal(Heartbeat(), 0),
        deliver(3, 1, b"for aiormq", headers={"x-stream-offset": 5}),  # a channel not taken
        pamqp_frame.marshal(Basic.ConsumeOk("ctag1.abc"), 2),  # a method of a taken one
        pamqp_frame.marshal(Channel.Close(404, "NOT_FOUND", 0, 0), 2),
    ]
    taken = [deliver(2, n, b"x%d" % n, headers={"x-stream-offset": n}) for n in range(4)]
    # Interleaved: a frame of channel 3 between a delivery's frames on channel 2 is legal.
    middle = taken[1]
    cut = 7 + struct.unpack_from(">I", middle, 3)[0] + 1
    data = b"".join(
        [
            others[0],
            taken[0],
            middle[:cut],
            others[1],
            middle[cut:],
            others[2],
            taken[2],
            *others[3:],
            taken[3],
        ]
    )
    got: list[Delivery] = []
    handed, splitter = split(data, chunk, {2: got})
    assert handed == b"".join(others)
    assert [d.body for d in got] == [b"x0", b"x1", b"x2", b"x3"]
    assert splitter.frames == 4 * 3 + 3 + 3  # deliveries, heartbeat + close + consume-ok, ch 3


def test_a_channel_dropped_is_handed_on_again() -> None:
    splitter = FrameSplitter()
    got: list[Delivery] = []
    sink = got.append
    splitter.take(2, sink)
    first = deliver(2, 1, b"a")
    assert splitter.feed(first) == b""
    splitter.drop(2, lambda _d: None)  # another consumer's drop: not this one's
    assert splitter.feed(first) == b""
    splitter.drop(2, sink)
    assert splitter.feed(first) == first and len(got) == 2


@pytest.mark.parametrize(
    "garbage",
    [b"AMQP\x00\x00\x09\x01", b"\x01\x00\x02\x00\x00\x00\x01\x00\x00", b"\x09" + b"\x00" * 20],
    ids=["protocol-header", "bad-frame-end", "unknown-type"],
)
def test_bytes_that_are_not_amqp_are_handed_on_whole(garbage: bytes) -> None:
    splitter = FrameSplitter()
    got: list[Delivery] = []
    splitter.take(2, got.append)
    before = deliver(2, 1, b"a")
    handed = splitter.feed(before + garbage)
    assert splitter.broken and len(got) == 1
    assert handed == garbage
    later = deliver(2, 2, b"b")
    assert splitter.feed(later) == later  # from then on, aiormq reads everything


def test_a_heartbeat_frame_is_what_pamqp_writes() -> None:
    assert pamqp_frame.marshal(Heartbeat(), 0) == HEARTBEAT_FRAME


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_message_of_several_records_is_read_as_every_one_of_them(chunk: int) -> None:
    # The worker's records of one loop turn travel in one message: every record is a row,
    # all at the message's offset, whatever the socket's chunks and the body's frames.
    runs = [
        [record(f"m-{n}", attempt=k + 1, answer="x" * 150) for k in range(n)] for n in (1, 5, 40)
    ]
    bodies = [b"\n".join(r.to_body() for r in run) for run in runs]
    bodies.insert(2, bodies[1][:100] + b"\n" + bodies[0])  # one record cut short: malformed
    data = b"".join(
        deliver(2, n + 1, body, headers={"x-stream-offset": 70 + n}, max_frame=4096)
        for n, body in enumerate(bodies)
    )
    got: list[Delivery] = []
    handed, splitter = split(data, chunk, {2: got})
    assert handed == b"" and splitter.taken == 4 and not splitter.broken
    assert [d.body for d in got] == bodies
    found = [deliveries_rows(d) for d in got]
    assert [len(rows) for rows in found] == [1, 5, 2, 40]
    bad, good = found[2]
    assert isinstance(bad, RecordError) and good == ("attempts", attempt_row(runs[0][0], 72))
    for run, rows, offset in zip(runs, (found[0], found[1], found[3]), (70, 71, 73), strict=True):
        assert rows == [("attempts", attempt_row(one, offset)) for one in run]
