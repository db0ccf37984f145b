"""``dlq list`` and ``dlq replay``: listing leaves the DLQ as it was; replay moves messages
back with ``x-attempt`` reset and a now-healthy handler acks them."""

from __future__ import annotations

import asyncio

import pytest
from pamqp.commands import Basic

from bridge import PermanentError
from bridge.amqp.topology import dlq_name, partitions_exchange_name
from bridge.cli import main
from bridge.core import metrics
from bridge.errors import CommandError
from bridge.worker.dlq import describe, list_dead_letters, queue_depth, replay_dead_letters
from bridge.worker.message import Message
from tests.conftest import AMQP_URL, BrokerProbe, bridge_settings
from tests.worker_helpers import (
    bare_dead_letters,
    body_for,
    cancels_at_every_turn,
    publish,
    running_worker,
    subscriber,
    unique_name,
    wait_until,
)


def _acked(name: str) -> float:
    return metrics.WORKER_MESSAGES.labels(name, "acked")._value.get()


async def test_list_then_replay_brings_dead_letters_back_to_a_healthy_handler(
    probe: BrokerProbe, exchange: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = subscriber(tries=1, delays=())
    healthy = False
    calls: list[tuple[str, int, object]] = []

    async def handler(message: Message) -> None:
        calls.append((message.message_id, message.attempt, message.headers.get("x-attempt")))
        if not healthy:
            raise PermanentError("ERP says no")

    settings = bridge_settings(exchange)
    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        sent = [
            await publish(probe, exchange, "despatched", body_for("despatched", i))
            for i in range(3)
        ]
        await wait_until(lambda: len(calls) == 3)
        await wait_until(_dlq_has(probe, dlq_name(sub.name), 3))

        listing = await list_dead_letters(settings.amqp_urls, sub.name, None)
        lines = [describe(got) for got in listing.messages]
        assert sorted(line.split("\t")[0] for line in lines) == sorted(sent)
        for line in lines:
            _id, event, order_id, attempts, error = line.split("\t")
            assert (event, attempts, error) == ("despatched", "1", "PermanentError: ERP says no")
            assert order_id != "-"
        # Listing took nothing away (the broker puts them back as the connection closes).
        await wait_until(_dlq_has(probe, dlq_name(sub.name), 3), timeout=5)

        healthy = True
        calls.clear()
        assert (await replay_dead_letters(settings.amqp_urls, sub.name, 2))[0] == 2
        await wait_until(lambda: _acked(sub.name) == 2)
        await wait_until(_dlq_has(probe, dlq_name(sub.name), 1), timeout=5)
        assert (await replay_dead_letters(settings.amqp_urls, sub.name, None))[0] == 1
        await wait_until(lambda: _acked(sub.name) == 3)
    assert sorted(c[0] for c in calls) == sorted(sent)
    assert all(attempt == 1 and header is None for _, attempt, header in calls)
    assert await probe.count(dlq_name(sub.name)) == 0
    assert await probe.count(sub.name) == 0


def _dlq_has(probe: BrokerProbe, queue: str, n: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return await probe.count(queue) == n

    return check


def test_dlq_of_an_unknown_subscriber_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_AMQP_URL", AMQP_URL)
    code = main(["dlq", "list", "no-such-subscriber-3e1f"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert "no-such-subscriber-3e1f.dlq does not exist" in err


def test_a_malformed_name_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay", "bad name"]) == 2
    assert "NAME" in capsys.readouterr().err


async def test_an_interrupted_replay_loses_nothing(
    probe: BrokerProbe, exchange: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name("replay")
    probe.track(queues=(name, dlq_name(name)))
    channel = await probe._chan()
    # The subscriber's queue takes one message, then refuses (nacks) the rest. (A classic
    # queue: a quorum queue applies its length limit a little late.)
    await channel.queue_declare(
        name, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await channel.queue_declare(dlq_name(name), durable=True, arguments={"x-queue-type": "quorum"})
    for i in range(5):
        await channel.basic_publish(
            body_for("despatched", i),
            routing_key=dlq_name(name),
            properties=Basic.Properties(message_id=f"m{i}", headers={"x-attempt": 3}),
        )
    with pytest.raises(CommandError, match="refused") as refused:
        await replay_dead_letters(bridge_settings(exchange).amqp_urls, name, None)
    assert "1 moved back before this" in str(refused.value)

    async def all_kept() -> bool:
        return (await probe.count(name), await probe.count(dlq_name(name))) == (1, 4)

    await wait_until(all_kept, timeout=5)
    [moved] = await probe.get_all(name, expected=1)
    assert "x-attempt" not in (moved.header.properties.headers or {})


async def test_replay_from_the_command_line_counts_in_words_and_an_unknown_name_is_only_the_error(
    probe: BrokerProbe,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_AMQP_URL", AMQP_URL)
    name = unique_name("cli-replay")
    await bare_dead_letters(probe, name, 1)
    assert await asyncio.to_thread(main, ["dlq", "replay", name]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"replayed 1 message from {dlq_name(name)} to {name}"

    assert await asyncio.to_thread(main, ["dlq", "replay", name + "-nope"]) == 1
    got = capsys.readouterr()
    assert got.out == ""
    assert got.err.count("\n") == 1 and "does not exist" in got.err


async def test_a_dead_letter_listed_25_times_is_still_handled_when_replayed(
    probe: BrokerProbe, exchange: str
) -> None:
    # Every listing hands the dead letter back, which raises the quorum DLQ's
    # x-delivery-count; the replayed copy must not carry it (it would look like a
    # crash loop, 20 redeliveries, and be dead-lettered again without a call).
    sub = subscriber(tries=1, delays=())
    healthy = False
    calls: list[str] = []

    async def handler(message: Message) -> None:
        calls.append(message.message_id)
        if not healthy:
            raise PermanentError("ERP says no")

    settings = bridge_settings(exchange)
    async with running_worker(probe, exchange, [sub], {sub.name: handler}):
        sent = await publish(probe, exchange, "despatched", body_for("despatched", 1))
        await wait_until(_dlq_has(probe, dlq_name(sub.name), 1))
        for _ in range(25):
            # The broker takes the last listing's message back a moment after it closed.
            await wait_until(_dlq_has(probe, dlq_name(sub.name), 1), timeout=5)
            listing = await list_dead_letters(settings.amqp_urls, sub.name, None)
            assert len(listing.messages) == 1
        await wait_until(_dlq_has(probe, dlq_name(sub.name), 1), timeout=5)
        headers = listing.messages[0].header.properties.headers or {}
        assert int(str(headers.get("x-delivery-count", 0))) >= 20  # the broker's own count grew

        healthy = True
        calls.clear()
        assert (await replay_dead_letters(settings.amqp_urls, sub.name, None))[0] == 1
        await wait_until(lambda: _acked(sub.name) == 1)
    assert calls == [sent]
    assert await probe.count(dlq_name(sub.name)) == 0


async def test_identical_dead_letters_replayed_to_nowhere_are_all_kept(
    probe: BrokerProbe, exchange: str
) -> None:
    # aiormq matches a basic.return to its publish by message id alone: with two
    # identical copies in flight the wrong one got the error, and the ack of the
    # returned one acked its dead letter. An ordered subscriber's partitions exchange
    # with no queue bound routes nothing, so every copy comes back.
    name = unique_name("twins")
    probe.track(queues=(dlq_name(name),), exchanges=(partitions_exchange_name(name),))
    channel = await probe._chan()
    await channel.exchange_declare(
        partitions_exchange_name(name), exchange_type="fanout", durable=True
    )
    await channel.queue_declare(dlq_name(name), durable=True, arguments={"x-queue-type": "quorum"})
    for _ in range(6):
        await channel.basic_publish(
            body_for("despatched", 1),
            routing_key=dlq_name(name),
            properties=Basic.Properties(message_id="twin-1", headers={"x-attempt": 3}),
        )
    await wait_until(_dlq_has(probe, dlq_name(name), 6), timeout=5)
    with pytest.raises(CommandError, match="routed nothing"):
        await replay_dead_letters(bridge_settings(exchange).amqp_urls, name, None)
    # Nothing was confirmed, so nothing may have been acked.
    await wait_until(_dlq_has(probe, dlq_name(name), 6), timeout=5)

    # Once something is bound, the twins all move, one after the other.
    target = await probe.bind_queue(partitions_exchange_name(name), "")
    moved, _ = await replay_dead_letters(bridge_settings(exchange).amqp_urls, name, None)
    assert moved == 6
    assert await probe.count(dlq_name(name)) == 0
    assert len(await probe.get_all(target, expected=6)) == 6


async def test_a_depth_read_cancelled_at_any_point_is_cancelled(probe: BrokerProbe) -> None:
    """A command or console page stopped during a depth read stops: bounded by aiormq's
    ``timeout=`` (asyncio.wait_for), a read returned its answer instead when the answer came
    with the cancel, and what ran it went on."""
    name = unique_name("cancel")
    await bare_dead_letters(probe, name, 1)
    assert probe.connection is not None
    cancelled, answered_anyway = await cancels_at_every_turn(
        probe.connection, lambda channel: queue_depth(channel, dlq_name(name))
    )
    assert cancelled > 0  # (else no cancel met a read in progress)
    assert answered_anyway == 0
