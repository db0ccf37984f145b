"""The archive's state (``archive status``): whether it exists, its size, the time of its
oldest and newest webhook, and its retention.

The size is the broker's own count (offsets, refreshed every few seconds, so it lags a
burst and reads 0 just after a restart). The oldest webhook is the first of the log; the
newest is found by attaching at the log's last chunk before writing an end marker, so both
reads are short and end by themselves. Fails like :mod:`bridge.archive.reader`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiormq
from aiormq.abc import AbstractConnection

from bridge.amqp.connection import close_quietly, connect_once
from bridge.amqp.topology import ArchiveRetention, archive_name
from bridge.archive.end import StreamOffset, bounded, read_to_end
from bridge.archive.reader import ArchivedWebhook, archived


@dataclass(frozen=True)
class ArchiveStatus:
    enabled: bool  # the stream exists
    messages: int
    oldest: datetime | None
    newest: datetime | None
    max_age: str | None
    max_bytes: int | None
    retention_note: str = ""  # set when the stream's retention differs from the settings'


async def _edge(
    connection: AbstractConnection, stream: str, start: StreamOffset, *, last: bool
) -> ArchivedWebhook | None:
    """The first webhook from ``start`` on, or (``last``) the last one up to the end."""
    found: ArchivedWebhook | None = None
    # Read-only: the console's overview (a GET) asks this, and must not write to the stream.
    reading = read_to_end(connection, stream, start, prefetch=500, writes=False)
    try:
        async for message in reading:
            webhook = archived(message)
            if webhook is not None:
                found = webhook
                if not last:
                    break
    finally:
        await reading.aclose()
    return found


async def _newest(connection: AbstractConnection, stream: str) -> ArchivedWebhook | None:
    # The last chunk holds the newest webhook unless only end markers of earlier reads were
    # written since: then look further back, widening the window.
    now = datetime.now(UTC)
    starts: tuple[StreamOffset, ...] = (
        "last",
        now - timedelta(hours=1),
        now - timedelta(days=1),
        "first",
    )
    for start in starts:
        found = await _edge(connection, stream, start, last=True)
        if found is not None:
            return found
    return None


async def _retention(
    connection: AbstractConnection, stream: str, retention: ArchiveRetention
) -> str:
    """Empty when declaring the stream with ``retention`` is accepted (it is equivalent),
    else the broker's reason."""
    channel = await bounded(connection.channel(), "opening a channel")
    try:
        await bounded(
            channel.queue_declare(stream, durable=True, arguments=retention.arguments()),
            "a declare",
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        return str(exc.args[0] if exc.args else exc)
    await close_quietly(channel)
    return ""


async def archive_status(
    amqp_urls: Sequence[str], exchange: str, retention: ArchiveRetention | None = None
) -> ArchiveStatus:
    """The state of ``<exchange>.archive``; ``retention`` (the settings') is reported when
    the stream was declared with it."""
    connection = await connect_once(amqp_urls)
    try:
        return await status_on(connection, exchange, retention)
    finally:
        await close_quietly(connection)


async def status_on(
    connection: AbstractConnection, exchange: str, retention: ArchiveRetention | None = None
) -> ArchiveStatus:
    """:func:`archive_status` on an open connection (the console's link), left open: every
    channel it opens is closed."""
    stream = archive_name(exchange)
    channel = await bounded(connection.channel(), "opening a channel")
    try:
        ok = await bounded(channel.queue_declare(stream, passive=True), "a passive declare")
    except aiormq.exceptions.ChannelNotFoundEntity:
        return ArchiveStatus(False, 0, None, None, None, None)
    await close_quietly(channel)
    oldest = await _edge(connection, stream, "first", last=False)
    newest = await _newest(connection, stream) if oldest is not None else None
    note = await _retention(connection, stream, retention) if retention else ""
    kept = retention if retention is not None and not note else None
    return ArchiveStatus(
        enabled=True,
        messages=int(ok.message_count or 0),
        oldest=oldest.received_at if oldest else None,
        newest=newest.received_at if newest else None,
        max_age=kept.max_age if kept else None,
        max_bytes=kept.max_bytes if kept else None,
        retention_note=note,
    )
