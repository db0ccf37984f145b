"""The hand-built publish frames are byte for byte those aiormq/pamqp would send."""

from __future__ import annotations

import io
import time

import pamqp.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from bridge.amqp.frames import PublishFrames, headers_table
from bridge.core.contract import EVENTS, Envelope, quarantine_envelope, webhook_envelope
from tests.conftest import fixture_body

FRAME_MAX = 131072
MAX_BODY_FRAME = FRAME_MAX - 8


def pamqp_frames(envelope: Envelope, exchange: str, channel: int, max_body: int) -> bytes:
    """What aiormq's ``basic_publish`` marshals for the same publish."""
    frames: list[object] = [
        Basic.Publish(exchange=exchange, routing_key=envelope.routing_key, mandatory=True),
        ContentHeader(properties=envelope.properties(), body_size=len(envelope.body)),
    ]
    body = envelope.body
    if body and len(body) < max_body:
        frames.append(ContentBody(body))
    elif body:
        reader = io.BytesIO(body)
        while chunk := reader.read(max_body):
            frames.append(ContentBody(chunk))
    return b"".join(pamqp.frame.marshal(f, channel) for f in frames)  # type: ignore[arg-type]


@pytest.mark.parametrize("event", EVENTS)
def test_fixture_webhooks_match_pamqp(event: str) -> None:
    import orjson

    body = fixture_body(event)
    envelope = webhook_envelope(event, body, orjson.loads(body), "req-1", time.time())
    frames = PublishFrames(1, "mintsoft.orders", MAX_BODY_FRAME)
    assert frames.encode(envelope) == pamqp_frames(envelope, "mintsoft.orders", 1, MAX_BODY_FRAME)


def test_quarantined_body_and_other_channel_match_pamqp() -> None:
    envelope = quarantine_envelope("split", b"{not json", "r" * 64, 1_790_000_000.987)
    frames = PublishFrames(7, "x.y", MAX_BODY_FRAME)
    assert frames.encode(envelope) == pamqp_frames(envelope, "x.y", 7, MAX_BODY_FRAME)


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 250, 1000])
def test_bodies_split_into_frames_like_aiormq(size: int) -> None:
    envelope = quarantine_envelope("despatched", bytes(range(256)) * 4, "r", 1.5)
    envelope = Envelope(
        envelope.event,
        envelope.routing_key,
        envelope.body[:size],
        envelope.message_id,
        envelope.received_at,
        envelope.headers,
    )
    frames = PublishFrames(2, "ex", 100)
    assert frames.encode(envelope) == pamqp_frames(envelope, "ex", 2, 100)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=30),
        st.text(max_size=200),
        max_size=8,
    ),
    received_at=st.floats(min_value=0, max_value=4_000_000_000),
    event=st.sampled_from(EVENTS),
)
def test_any_string_headers_match_pamqp(
    headers: dict[str, str], received_at: float, event: str
) -> None:
    headers = {"x-event": event, **headers}
    envelope = Envelope(event, "order." + event, b"{}", "ab" * 16, received_at, headers)
    frames = PublishFrames(1, "mintsoft.orders", MAX_BODY_FRAME)
    assert frames.encode(envelope) == pamqp_frames(envelope, "mintsoft.orders", 1, MAX_BODY_FRAME)


def test_headers_table_sorts_keys_like_pamqp() -> None:
    from pamqp.encode import field_table

    headers = {"x-z": "1", "x-a": "é", "x-m": ""}
    assert headers_table(headers) == field_table(headers)  # type: ignore[arg-type]


@pytest.mark.parametrize("tag", [1, 255, 2**40 + 7])
@pytest.mark.parametrize("channel", [1, 9])
def test_ack_and_nack_frames_match_pamqp(tag: int, channel: int) -> None:
    from bridge.amqp.pipeline import ack_frame

    assert ack_frame(channel, tag, True) == pamqp.frame.marshal(
        Basic.Ack(delivery_tag=tag), channel
    )
    assert ack_frame(channel, tag, False) == pamqp.frame.marshal(
        Basic.Nack(delivery_tag=tag, requeue=True), channel
    )


@pytest.mark.parametrize("content_type", ["text/plain; charset=utf-8", None, "bad\x01type"])
def test_a_quarantined_body_keeps_the_senders_content_type_like_pamqp(
    content_type: str | None,
) -> None:
    envelope = quarantine_envelope("despatched", b"<x/>", "r-1", 1_790_000_000.5, content_type)
    expected = "text/plain; charset=utf-8" if content_type == "text/plain; charset=utf-8" else None
    assert envelope.content_type == (expected or "application/octet-stream")
    frames = PublishFrames(1, "x.y", MAX_BODY_FRAME)
    assert frames.encode(envelope) == pamqp_frames(envelope, "x.y", 1, MAX_BODY_FRAME)


@pytest.mark.parametrize("size", [0, 5, 100, 250])
def test_any_message_matches_pamqp(size: int) -> None:
    """A copy on the ladder, a record, an end marker: any properties, any body size."""
    properties = Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="m-1",
        correlation_id="c",
        timestamp=None,
        headers={"x-attempt": 3, "x-error": "boom", "x-flag": True},
    )
    body = bytes(range(256))[:size]
    frames = PublishFrames(3, "", 100).encode_message("sub.retry.0", body, properties)
    expected: list[object] = [
        Basic.Publish(exchange="", routing_key="sub.retry.0", mandatory=True),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    expected += [ContentBody(body[i : i + 100]) for i in range(0, len(body), 100)]
    assert frames == b"".join(pamqp.frame.marshal(f, 3) for f in expected)  # type: ignore[arg-type]
