"""``dlq list NAME`` and ``dlq replay NAME``: what a subscriber dead-lettered, and moving it
back to the subscriber's queue.

Listing takes each message without acking it, so closing the channel puts every one back.
Replaying publishes a copy to ``<name>`` (via the default exchange, so no other subscriber
sees it again), waits for the broker's confirm, and only then acks the dead letter: an
interrupted replay loses nothing (at worst one message is in both queues).
"""

from __future__ import annotations

import sys
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp.commands import Basic

from bridge.connection import connect_once
from bridge.errors import CommandError
from bridge.message import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    copy_properties,
    delivery_number,
    event_of,
    plain_headers,
)
from bridge.settings import Settings, SettingsError
from bridge.subscribers import NAME_PATTERN
from bridge.topology import dlq_name

PUBLISH_TIMEOUT = 10.0


def _check(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise SettingsError(
            f"NAME {name!r} is not a subscriber name: use the name = ... of its [[subscriber]]"
        )


async def _depth(channel: AbstractChannel, queue: str) -> int:
    try:
        ok = await channel.queue_declare(queue, passive=True)
    except ChannelNotFoundEntity:
        raise CommandError(
            f"queue {queue} does not exist: check NAME, or declare the subscriber's queues "
            "with `mintsoft-bridge topology --config FILE`"
        ) from None
    return int(ok.message_count or 0)


def _empty(got: DeliveredMessage) -> bool:
    return isinstance(got.delivery, Basic.GetEmpty)


def describe(got: DeliveredMessage) -> str:
    """``message_id, event, order id, attempts, error``, tab-separated, one line."""
    properties = got.header.properties
    headers = plain_headers(properties.headers)
    fields: list[Any] = [
        properties.message_id or "-",
        event_of(properties, headers, got.routing_key or ""),
        headers.get("x-order-id") or "-",
        delivery_number(headers),
        " ".join(str(headers.get(ERROR_HEADER) or "-").split()),
    ]
    return "\t".join(str(field) for field in fields)


async def list_command(settings: Settings, name: str, limit: int | None) -> int:
    """Print one line per dead letter of subscriber ``name``; the queue is left as it was."""
    _check(name)
    queue = dlq_name(name)
    connection = await connect_once(settings.amqp_urls)
    try:
        channel = await connection.channel(publisher_confirms=False)
        depth = await _depth(channel, queue)
        wanted = depth if limit is None else min(depth, limit)
        shown = 0
        while shown < wanted:
            got = await channel.basic_get(queue, no_ack=False)
            if _empty(got):
                break
            print(describe(got))
            shown += 1
    finally:
        await connection.close()  # unacked: every listed message goes back to the queue
    print(f"{shown} of {depth} dead letters in {queue}", file=sys.stderr)
    return 0


async def replay_command(settings: Settings, name: str, limit: int | None) -> int:
    """Move up to ``limit`` dead letters back to ``name`` with ``x-attempt`` reset."""
    _check(name)
    queue = dlq_name(name)
    connection = await connect_once(settings.amqp_urls)
    moved = 0
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await _depth(channel, name)
        # Only what is there now: a message that fails again must not be replayed twice.
        depth = await _depth(channel, queue)
        wanted = depth if limit is None else min(depth, limit)
        while moved < wanted:
            got = await channel.basic_get(queue, no_ack=False)
            if _empty(got):
                break
            await _move_back(channel, got, name)
            moved += 1
    finally:
        await connection.close()
        print(f"replayed {moved} messages from {queue} to {name}")
    return 0


async def _move_back(channel: AbstractChannel, got: DeliveredMessage, name: str) -> None:
    properties = got.header.properties
    headers = dict(properties.headers or {})
    for header in (ATTEMPT_HEADER, ERROR_HEADER, FAILED_AT_HEADER):
        headers.pop(header, None)
    try:
        confirm = await channel.basic_publish(
            got.body,
            exchange="",
            routing_key=name,
            properties=copy_properties(properties, headers),
            mandatory=True,
            timeout=PUBLISH_TIMEOUT,
        )
    except Exception as exc:
        raise CommandError(
            f"the broker did not take a replayed message ({type(exc).__name__}); "
            "nothing was lost: run the replay again"
        ) from None
    if not isinstance(confirm, Basic.Ack):
        raise CommandError("the broker refused a replayed message: nothing was lost; try again")
    assert got.delivery_tag is not None
    await channel.basic_ack(got.delivery_tag)
