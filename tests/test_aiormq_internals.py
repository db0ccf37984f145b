"""The adapter over aiormq's internals: the installed aiormq passes its check on a real
channel, a changed internal is named and makes the publisher fall back to aiormq's public
API (saying so once), and acks work on both paths."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import aiormq
import pytest
from aiormq.abc import AbstractChannel

from bridge.amqp import aiormq_internals as internals
from bridge.amqp import publisher as publisher_module
from bridge.amqp.connection import BrokerLink
from bridge.amqp.pipeline import AckWriter
from bridge.amqp.publisher import FAST, PUBLIC, Confirms, Publisher, PublishFailed
from tests.conftest import AMQP_URL, BrokerProbe, consuming, only_a_sentinel_follows
from tests.test_publisher import envelope

pytestmark = pytest.mark.both_publish_paths


async def test_the_installed_aiormq_passes_the_check(channel: AbstractChannel) -> None:
    assert internals.check(channel) is None
    assert internals.check_acks(channel) is None


@pytest.mark.parametrize(
    ("attribute", "value", "named"),
    [
        ("confirmations", [], "confirmations"),
        ("delivery_tag", "0", "delivery_tag"),
        ("delivery_tag", 3, "already counted"),
        ("message_id_delivery_tag", None, "message_id_delivery_tag"),
        ("on_return_callbacks", [], "on_return_callbacks"),
        ("write_queue", "not a queue", "write_queue"),
        ("max_content_size", 0, "max_content_size"),
    ],
)
async def test_a_changed_internal_is_named(
    channel: AbstractChannel, attribute: str, value: Any, named: str
) -> None:
    saved = getattr(channel, attribute)
    setattr(channel, attribute, value)
    try:
        reason = internals.check(channel)
    finally:
        setattr(channel, attribute, saved)
    assert reason is not None and named in reason and aiormq.__name__ in reason


async def test_a_changed_frame_type_falls_back_to_the_public_api_and_says_so_once(
    plain_exchange: tuple[str, BrokerProbe],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    @dataclasses.dataclass
    class OtherFrame:
        payload: bytes
        channel_number: int

    monkeypatch.delenv(internals.PATH_ENV, raising=False)
    monkeypatch.setattr(internals, "ChannelFrame", OtherFrame)
    # The process says it once: forget what an earlier test in this process heard.
    monkeypatch.setattr(publisher_module, "_said", None)
    name, probe = plain_exchange
    queue = await probe.bind_queue(name, "order.despatched")
    link = BrokerLink((AMQP_URL,), name="test fallback")
    assert await link.start(wait=5)
    try:
        publisher = Publisher(link, name, timeout=5)
        with caplog.at_level(logging.INFO, logger="bridge.amqp.publisher"):
            await asyncio.gather(*(publisher.publish(envelope("despatched", i)) for i in range(5)))
            with pytest.raises(PublishFailed) as failed:
                await publisher.publish(envelope("cancelled", 1))
        assert failed.value.reason == "returned"
        assert len(await probe.get_all(queue, expected=5)) == 5
        said = [r for r in caplog.records if r.name == "bridge.amqp.publisher"]
        assert len(said) == 1 and said[0].levelno == logging.WARNING
        assert "public API" in said[0].getMessage()
        assert "ChannelFrame" in said[0].getMessage()
    finally:
        await link.close()


@pytest.mark.parametrize("path", [FAST, PUBLIC])
async def test_the_environment_picks_the_path(
    path: str, channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(internals.PATH_ENV, path)
    assert Confirms(channel).path == path


@pytest.mark.parametrize("path", [FAST, PUBLIC])
async def test_acks_and_requeues_on_both_paths(
    path: str, channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(internals.PATH_ENV, path)
    queue, got = await consuming(channel, (b"ack me", b"requeue me"))
    writer = AckWriter()
    first, second = await got.get(), await got.get()
    assert (first.body, second.body) == (b"ack me", b"requeue me")
    assert first.delivery_tag is not None and second.delivery_tag is not None
    writer.settle(channel, first.delivery_tag, True)
    writer.settle(channel, second.delivery_tag, False)
    again = await asyncio.wait_for(got.get(), 10)
    assert again.body == b"requeue me" and again.redelivered
    assert again.delivery_tag is not None
    writer.settle(channel, again.delivery_tag, True)
    # Nothing else comes back: the next delivery is a sentinel sent after the acks.
    writer.settle(channel, await only_a_sentinel_follows(channel, queue, got), True)


async def test_a_return_after_its_publish_gave_up_is_logged_without_the_body(
    plain_exchange: tuple[str, BrokerProbe], caplog: pytest.LogCaptureFixture
) -> None:
    """aiormq logs a return it cannot match with the whole message: never the customer's
    data, only the message id."""
    name, _probe = plain_exchange
    link = BrokerLink((AMQP_URL,), name="test late return")
    assert await link.start(wait=5)
    try:
        publisher = Publisher(link, name, timeout=5)
        unroutable = envelope("cancelled", 5)
        with caplog.at_level(logging.INFO):
            with pytest.raises(PublishFailed):
                await publisher.publish(unroutable, timeout=0)
            await asyncio.sleep(0.5)  # the broker's return arrives meanwhile
        for record in caplog.records:
            text = record.getMessage()
            assert "Smith" not in text and "High Street" not in text, text
        late = [r for r in caplog.records if r.name == "aiormq.channel"]
        if not internals.public_path_reason():
            assert [r.levelno for r in late] == [logging.INFO]
            assert unroutable.message_id in late[0].getMessage()
    finally:
        await link.close()
