"""``mintsoft-bridge ledger``: reads ``<exchange>.archive`` and ``<exchange>.deliveries`` (its
delivery records and audit records) from the offsets the ledger stored and writes their rows
in batches (up to :data:`BATCH_ROWS` rows or :data:`BATCH_SECONDS`), each batch with its
offsets in one transaction (:func:`bridge.ledger.store.write_batch`). The streams are read by
:mod:`bridge.ledger.consumer` (deliveries parsed from the wire, no task per message); a
batch's rows are built in a thread while the batch before is written in another (one write
at a time, in order), and the broker gets its acks once per batch, for the whole batch,
after the commit; meanwhile the next batch arrives (the prefetch is twice a batch).

Guarantees: a crash (even SIGKILL) loses no row and writes none twice: the next start reads
on from one past the stored offsets, and what the broker sends again after a reconnect is
recognised by its offset. A deliveries message may carry several records (one row each:
:func:`bridge.ledger.rows.deliveries_rows`); a message is always taken whole into one batch,
so its offset is stored with all of its rows. SIGTERM writes the batch in hand, then stops.
A malformed message, or a malformed record among others, is counted
(``stream_offsets.malformed``, a log line) and skipped. A broker that goes away is
reconnected to (with failover across ``BRIDGE_AMQP_URL``); a database that fails is retried
with the batch kept, while the broker holds back what is not acknowledged.

Only one indexer may write a ledger (PostgreSQL or SQLite alike): two would each write
every row once and the unique keys would turn the second copy away, counted as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bridge.amqp.connection import BrokerLink
from bridge.amqp.topology import archive_name, declare, settings_topology
from bridge.core import metrics
from bridge.core.durations import parse_duration
from bridge.core.listeners import serving_metrics
from bridge.core.records import RECORD_SEPARATOR, RecordError, deliveries_stream
from bridge.core.settings import Settings, redact_url
from bridge.core.tasks import cancel_and_wait, stop_on_signals
from bridge.errors import CommandError
from bridge.ledger.consumer import SplittingTransport, consume
from bridge.ledger.consumer import check as consumer_check
from bridge.ledger.database import ledger_url, open_writer
from bridge.ledger.deliveries_wire import Consumer, Delivery, stamp_time
from bridge.ledger.queries import undelivered_oldest
from bridge.ledger.rows import Found, archive_rows, deliveries_rows
from bridge.ledger.store import (
    Batch,
    SubscriberSpec,
    mark_current,
    newest_received,
    optimize,
    remove_before,
    store_subscribers,
    store_undelivered,
    stored_offsets,
    write_batch,
)

log = logging.getLogger("bridge.ledger")

BATCH_ROWS = 20_000
"""A batch's most rows: each commit writes every page its rows dirtied, and with random
keys a batch of 20,000 dirties fewer pages per row than one of 5,000 (SQLite: a quarter
more rows per CPU second at 1.5 million rows)."""
BATCH_SECONDS = 0.2
PREFETCH = 2 * BATCH_ROWS
"""Per stream. Stream consumers need a prefetch; acks (after each batch's commit) give
credit back, so deliveries keep arriving while a batch is written: twice a batch."""
IDLE_MARK = 2.0
"""Seconds without a message after which the indexer records that it is caught up."""
RETENTION_INTERVAL = 600.0
UNDELIVERED_INTERVAL = 15.0
SPOOL_LOOKBACK = timedelta(hours=1)
DB_RETRY_MAX = 10.0
GC_YOUNG_THRESHOLD = 100_000
"""Allocations between the cycle collector's young passes while indexing (Python's default:
700). A batch's deliveries and rows live a second or two and are in no cycle; at the
default the collector walked them again and again, and the older generations' passes every
object the process holds: 15% of the indexer's time at 20,000-row batches."""


@dataclass
class _Stream:
    name: str
    to_rows: Callable[[Delivery], list[Found]]
    kind: str  # "webhooks" or "attempts" (whose stream also carries the audit records)
    several: bool = False  # a message may carry several records (rows)
    seen: int = -1  # the last offset taken into a batch (or stored)


@dataclass
class _Taken:
    """A batch's deliveries, as they arrived, and where to ack them."""

    deliveries: list[tuple[_Stream, Delivery]]
    acks: dict[AbstractChannel, int]


@dataclass
class Indexer:
    settings: Settings
    engine: Engine
    url: str
    batch_rows: int = BATCH_ROWS
    batch_seconds: float = BATCH_SECONDS
    prefetch: int = PREFETCH
    retention_interval: float = RETENTION_INTERVAL
    undelivered_interval: float = UNDELIVERED_INTERVAL
    written: int = 0
    _pending: list[tuple[_Stream, AbstractChannel, Delivery]] = field(default_factory=list)
    _pending_rows: int = 0  # the rows (records) of the pending messages, about
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _full: asyncio.Event = field(default_factory=asyncio.Event)
    _streams: dict[str, _Stream] = field(default_factory=dict)
    _newest: float = 0.0  # epoch of the newest message written
    _idle_since: float = field(default_factory=time.monotonic)
    _fatal: BaseException | None = None
    _linked: bool = False
    _stopping: bool = False
    _watermarks: dict[str, datetime] = field(default_factory=dict)
    # The receive time of the newest webhook written: webhooks still to be indexed (a
    # backlog) were received after it, less a spool's delay; the undelivered passes never
    # look back less far than that.
    _received_through: datetime | None = None
    _transport: SplittingTransport | None = None
    _link: BrokerLink | None = None

    def __post_init__(self) -> None:
        exchange = self.settings.exchange
        streams = [_Stream(deliveries_stream(exchange), deliveries_rows, "attempts", True)]
        if self.settings.archive:
            streams.insert(0, _Stream(archive_name(exchange), archive_rows, "webhooks"))
        self._streams = {s.name: s for s in streams}
        self._kinds = {s.kind: s.name for s in streams}
        self._kinds.setdefault("webhooks", archive_name(exchange))
        reason = consumer_check()
        if reason is None:
            self._transport = SplittingTransport()
        else:
            log.warning("deliveries are read through aiormq, slower (%s)", reason)

    def lag_seconds(self) -> float:
        """0 while caught up (nothing arrived for a second); else the age of the newest
        row written, which grows while the broker or the database is away."""
        if not self._pending and time.monotonic() - self._idle_since > 1.0 and self._linked:
            return 0.0
        return max(0.0, time.time() - self._newest) if self._newest else 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Index until ``stop`` is set; the batch in hand is written before returning."""
        offsets = await self._db(stored_offsets, self.engine)
        self._received_through = await self._db(newest_received, self.engine)
        for stream in self._streams.values():
            stream.seen = offsets.get(stream.name, -1)
        metrics.LEDGER_LAG.set_function(self.lag_seconds)
        link = self._link = BrokerLink(
            self.settings.amqp_urls,
            self._on_channel,
            confirms=False,
            name="mintsoft-bridge ledger",
            transport_factory=self._transport,
        )
        link.on_state_change(self._on_link)
        waker = asyncio.create_task(self._wake_on(stop), name="ledger-stop")
        chores = [
            asyncio.create_task(self._retention(stop), name="ledger-retention"),
            asyncio.create_task(self._undelivered(stop), name="ledger-undelivered"),
        ]
        await link.start()
        log.info(
            "indexing %s into %s from offsets %s",
            ", ".join(self._streams),
            redact_url(self.url),
            {name: s.seen + 1 for name, s in self._streams.items()},
        )
        with _fewer_collections():
            try:
                await self._batches(stop)
            finally:
                self._stopping = True
                for chore in chores:
                    await cancel_and_wait(chore)
                await cancel_and_wait(waker)
                await link.close()
        if self._fatal is not None:
            raise self._fatal

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._arrived.set()
        self._full.set()

    def _on_link(self, up: bool) -> None:
        self._linked = up

    async def _on_channel(self, channel: AbstractChannel) -> None:
        """On every (re)connection: declare the streams, consume each from one past the
        last offset taken (what an old connection delivered is still pending)."""
        try:
            # As serve and topology declare them: the archive (when on) and the deliveries.
            await declare(channel, settings_topology(self.settings))
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            self._fatal = _declare_refused(exc)
            self._arrived.set()
            raise
        splitter = None if self._transport is None else self._transport.latest
        for stream in self._streams.values():
            await consume(
                channel.connection,
                splitter,
                stream.name,
                stream.seen + 1,
                self.prefetch,
                self._consumer(stream),
                self._lost,
            )

    def _consumer(self, stream: _Stream) -> Callable[[AbstractChannel], Consumer]:
        """What takes each delivery of ``stream`` on a channel: into the pending list, in
        order (synchronous, no task: called for every message)."""
        pending = self._pending
        arrived = self._arrived
        full = self._full

        def on(channel: AbstractChannel) -> Consumer:
            def arrive(delivery: Delivery) -> None:
                pending.append((stream, channel, delivery))
                self._pending_rows += _weight(stream, delivery)
                if not arrived.is_set():
                    arrived.set()
                if self._pending_rows >= self.batch_rows and not full.is_set():
                    full.set()

            return arrive

        return on

    def _lost(self, channel: AbstractChannel) -> None:
        """A consumer channel closed: with its connection (the link reconnects by itself)
        or alone (the broker closed or cancelled it): then the link starts over."""
        if self._stopping or self._link is None:
            return
        connection = channel.connection
        if connection is not None and not connection.is_closed:
            log.warning("a stream consumer's channel closed; reconnecting")
            self._link.renew()

    async def _batches(self, stop: asyncio.Event) -> None:
        """Gather batches and write them: each batch's rows are parsed while the one before
        is being written (the writer's SQLite or PostgreSQL work runs outside the GIL), and
        one write runs at a time, in order, so the stored offsets only move forward. Before
        idling, and before returning, the write in flight is awaited."""
        loop = asyncio.get_running_loop()
        writing: asyncio.Task[None] | None = None
        try:
            while not stop.is_set() and self._fatal is None:
                if not self._pending:
                    if writing is not None:
                        await writing
                        writing = None
                        continue
                    self._arrived.clear()
                    try:
                        async with asyncio.timeout(IDLE_MARK):
                            await self._arrived.wait()
                    except TimeoutError:
                        await self._mark_current()
                    continue
                # Gather up to a batch, at most batch_seconds after the first message.
                deadline = loop.time() + self.batch_seconds
                while self._pending_rows < self.batch_rows and not stop.is_set():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await self._full.wait()
                taken = self._take()
                batch = await asyncio.to_thread(_rows, taken.deliveries)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(self._commit(batch, taken.acks), name="ledger-write")
        finally:
            if writing is not None:
                await writing

    async def _commit(self, batch: Batch, acks: dict[AbstractChannel, int]) -> None:
        """Write ``batch`` (when it has anything), then give the streams their credit back."""
        if batch.offsets:
            await self._write(batch)
        await _ack(acks)
        if not self._pending:
            self._idle_since = time.monotonic()

    async def _mark_current(self) -> None:
        """Nothing arrived for :data:`IDLE_MARK` seconds while attached: the ledger holds
        every message appended until a moment ago (what sync checks before trusting it)."""
        if not self._linked or self._pending:
            return
        at = datetime.now(UTC) - timedelta(seconds=IDLE_MARK)
        try:
            await self._db(mark_current, self.engine, list(self._streams), at)
        except SQLAlchemyError as exc:
            log.warning("could not record the ledger's progress (%s)", exc)

    def _take(self) -> _Taken:
        """The next batch of pending deliveries (whole messages, up to about
        :attr:`batch_rows` rows), those sent again after a reconnect (at an offset already
        taken) left out; the last delivery tag per channel, to ack."""
        pending = self._pending
        count = rows = 0
        for stream, _channel, delivery in pending:
            if rows >= self.batch_rows:
                break
            rows += _weight(stream, delivery)
            count += 1
        self._pending_rows -= rows
        chunk = pending[:count]
        del pending[:count]
        deliveries: list[tuple[_Stream, Delivery]] = []
        acks: dict[AbstractChannel, int] = {}
        for stream, channel, delivery in chunk:
            acks[channel] = delivery.tag
            offset = delivery.offset
            if offset <= stream.seen:
                continue  # sent again after a reconnect (or no offset: malformed, below)
            stream.seen = offset
            deliveries.append((stream, delivery))
        return _Taken(deliveries, acks)

    async def _write(self, batch: Batch) -> None:
        delay = 0.2
        while True:
            try:
                duplicates = await asyncio.to_thread(write_batch, self.engine, batch, self._kinds)
                break
            except SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
                log.warning(
                    "could not write %d rows to %s (%s); retrying in %.1fs",
                    len(batch),
                    redact_url(self.url),
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX)
        self.written += len(batch) - duplicates
        metrics.LEDGER_ROWS.labels("webhooks").inc(len(batch.webhooks))
        metrics.LEDGER_ROWS.labels("attempts").inc(len(batch.attempts))
        metrics.LEDGER_ROWS.labels("audit").inc(len(batch.audit))
        for name, count in batch.malformed.items():
            metrics.LEDGER_MALFORMED.labels(self._streams[name].kind).inc(count)
        if duplicates:
            log.warning("%d rows were already in the ledger (kept once)", duplicates)
        times = [r["received_at"] for r in batch.webhooks]
        if times:
            newest = max(times)
            through = self._received_through
            self._received_through = newest if through is None else max(through, newest)
        times += [r["at"] for r in (*batch.attempts, *batch.audit)]
        if times:
            self._newest = max(self._newest, max(times).timestamp())

    async def _retention(self, stop: asyncio.Event) -> None:
        keep = timedelta(seconds=parse_duration(self.settings.archive_max_age))
        while not stop.is_set():
            cutoff = datetime.now(UTC) - keep
            try:
                removed = await self._db(remove_before, self.engine, cutoff)
                if removed:
                    log.info("removed %d rows older than %s", removed, cutoff.isoformat())
                await self._db(optimize, self.engine)
            except SQLAlchemyError as exc:
                log.warning("retention delete failed (%s); trying again later", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retention_interval):
                    await stop.wait()

    async def _undelivered(self, stop: asyncio.Event) -> None:
        """Set ``bridge_undelivered_oldest_seconds`` per known subscriber, and keep it in the
        ``subscribers`` table for the console, every :data:`UNDELIVERED_INTERVAL`. Each pass
        looks back only to the oldest webhook the last pass found unsettled, or to the newest
        webhook indexed when it ran if that is older (an indexer working through a backlog:
        what it indexes next was received after that), less :data:`SPOOL_LOOKBACK` (for
        webhooks that reach the archive late from a spool), so a pass costs what arrived
        since, not the whole table."""
        while not stop.is_set():
            started = datetime.now(UTC)
            through = self._received_through
            try:
                oldest = await self._db(undelivered_oldest, self.engine, self._watermarks)
            except SQLAlchemyError as exc:
                log.warning("could not compute the undelivered ages (%s)", exc)
                oldest = {}
            for name, when in oldest.items():
                age = 0.0 if when is None else (started - when).total_seconds()
                metrics.UNDELIVERED_OLDEST.labels(name).set(max(0.0, age))
                if through is None:  # nothing indexed yet: a backlog may be of any age
                    self._watermarks.pop(name, None)
                    continue
                self._watermarks[name] = min(when or started, started, through) - SPOOL_LOOKBACK
            if oldest:
                try:
                    # Kept for the console's subscriber page and cards (it reads, never
                    # computes: a first pass reads every unsettled candidate).
                    await self._db(store_undelivered, self.engine, oldest, started)
                except SQLAlchemyError as exc:
                    log.warning("could not store the undelivered ages (%s)", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.undelivered_interval):
                    await stop.wait()

    async def _db(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(call, *args)


def _weight(stream: _Stream, delivery: Delivery) -> int:
    """The rows a message makes, about (a malformed or sentinel one makes fewer): a message
    of the deliveries stream carries one record per line."""
    return delivery.body.count(RECORD_SEPARATOR) + 1 if stream.several else 1


def _rows(deliveries: list[tuple[_Stream, Delivery]]) -> Batch:
    """The rows of ``deliveries`` and the offsets they cover (run in a thread: JSON and
    times are parsed here). A malformed message is counted and logged, its offset covered."""
    batch = Batch()
    stamps: dict[str, int] = {}
    for stream, delivery in deliveries:
        name = stream.name
        offset = delivery.offset
        batch.cover(name, offset)
        stamp = delivery.stamp
        if stamp is not None and stamp > stamps.get(name, -1):
            stamps[name] = stamp
        for found in stream.to_rows(delivery):
            if isinstance(found, RecordError):
                batch.malformed[name] += 1
                log.warning(
                    "skipped a malformed record at offset %d of %s: %s", offset, name, found
                )
                continue
            table, row = found
            batch.rows(table).append(row)
    # Whole seconds, so "current" errs on the early side.
    batch.newest = {name: stamp_time(stamp) for name, stamp in stamps.items()}
    return batch


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """The cycle collector runs every :data:`GC_YOUNG_THRESHOLD` allocations, and what the
    process held at the start (modules, SQLAlchemy's and aiormq's objects) is left out of
    its passes (``gc.freeze``); both undone on leaving."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _ack(acks: dict[AbstractChannel, int]) -> None:
    """Give the streams their credit back, up to the last message of the batch (an ack on
    a stream deletes nothing; the offsets in the database say where to read on)."""
    for channel, tag in acks.items():
        if channel.is_closed:
            continue
        with contextlib.suppress(Exception):
            await channel.basic_ack(tag, multiple=True)


def _declare_refused(exc: BaseException) -> BaseException:
    reason = str(exc.args[0] if exc.args else exc)
    return CommandError(
        f"the broker refused a declaration ({reason}): run with the settings it was declared "
        "with (BRIDGE_ARCHIVE_MAX_AGE and BRIDGE_ARCHIVE_MAX_BYTES), or delete it first"
    )


async def run_ledger(settings: Settings, subscribers: Sequence[SubscriberSpec] | None) -> int:
    """Open (create, upgrade) the ledger, store ``subscribers`` when given, and index until
    SIGTERM or SIGINT; the rows written. ``/metrics`` on ``BRIDGE_METRICS_PORT`` if set."""
    url = ledger_url(settings)
    engine = await asyncio.to_thread(open_writer, url)
    try:
        if subscribers is not None:
            await asyncio.to_thread(store_subscribers, engine, subscribers)
            log.info("subscribers: %s", ", ".join(s.name for s in subscribers) or "none")
        indexer = Indexer(settings, engine, url)
        async with serving_metrics(settings, process="ledger"):
            with stop_on_signals() as stop:
                await indexer.run(stop)
        log.info("ledger stopped after writing %d rows", indexer.written)
        return indexer.written
    finally:
        engine.dispose()
