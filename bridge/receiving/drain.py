"""The drain: publishes what the spool holds, oldest first, each with a confirm, and deletes a
message only once the broker has confirmed it.

A crash between the confirm and the delete publishes that message again on the next start
(a duplicate, with the same ``message_id``); a message is never deleted unconfirmed. While
the broker keeps failing, the drain backs off and probes with one message at a time, so an
outage costs few duplicates; once a publish is confirmed it widens the window again.

:meth:`Drainer.until_empty` waits for the drain to empty the spool, within a bound: a
stopping ``serve`` uses it before exiting, and ``spool drain`` to publish a spool file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bridge.amqp.publisher import Publisher, PublishFailed
from bridge.core import metrics
from bridge.core.tasks import being_cancelled, cancel_and_wait
from bridge.receiving.spool import Spool, Spooled, SpoolError

log = logging.getLogger("bridge.receiving.drain")

Repair = Callable[[], Awaitable[None]]

CHUNK = 2048
"""Messages read from the spool at a time."""

WINDOW = 512
"""Publishes in flight at most while draining."""

MIN_BACKOFF = 0.2
MAX_BACKOFF = 5.0

STALL = 30.0
"""Seconds without a single message drained after which :meth:`Drainer.until_empty` stops
waiting: the broker went away, or refuses or returns what it is sent."""

POLL = 0.05


class Drainer:
    """Runs the drain task of one spool through one publisher.

    ``repair`` runs after a ``basic.return``: it re-declares the receiver topology (the
    alternate exchange someone deleted), so returned messages are routed on the next try.
    """

    def __init__(self, spool: Spool, publisher: Publisher, repair: Repair | None = None) -> None:
        self.spool = spool
        self.publisher = publisher
        self.repair = repair
        self.window = WINDOW
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spool-drain")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def until_empty(
        self,
        deadline: float | None = None,
        stall: float = STALL,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Run the drain until the spool is empty and return 0; or return how many messages
        remain once ``deadline`` (event-loop time) passes, or ``stall`` seconds pass without
        one drained. ``progress(n)`` is told whenever ``n`` more were published and deleted.

        It only watches: the drain keeps its order, confirms and deletes (and keeps running
        afterwards until :meth:`stop`), so stopping early never loses or skips a message.
        """
        self.start()
        loop = asyncio.get_running_loop()
        last = self.spool.depth
        moved_at = loop.time()
        while last > 0:
            now = loop.time()
            if now - moved_at >= stall or (deadline is not None and now >= deadline):
                break
            wait = POLL if deadline is None else min(POLL, deadline - now)
            await asyncio.sleep(wait)
            depth = self.spool.depth
            if depth < last:
                if progress is not None:
                    progress(last - depth)
                moved_at = loop.time()
            last = depth
        return last

    async def _run(self) -> None:
        backoff = MIN_BACKOFF
        while True:
            await self.spool.wait_stored()
            if not self.publisher.connected:
                await self.publisher.link.wait_up(MAX_BACKOFF)
                continue
            try:
                published, failure = await self._pass()
            except asyncio.CancelledError:
                if being_cancelled():
                    raise  # stop() was called
                # A confirmation cancelled under us (a renewed link): not a reason to stop
                # draining, or what the spool holds would wait for the next restart.
                log.warning("draining the spool: a publish was cancelled; retrying")
                await asyncio.sleep(backoff)
                continue
            except SpoolError as exc:
                log.error("cannot read the spool (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except Exception:
                # The drain must outlive any bug: a dead drain strands every spooled webhook.
                log.exception("draining the spool failed unexpectedly; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if failure is None:
                backoff = MIN_BACKOFF
                if not published:
                    # Counted as stored but not yet visible to this read: let the commit land.
                    await asyncio.sleep(0.01)
                continue
            if failure.reason == "returned" and self.repair is not None:
                await self._repair()
            log.warning(
                "draining the spool: publish failed (%s), %d messages waiting; retrying in %.1fs",
                failure,
                self.spool.depth,
                backoff,
            )
            self.window = 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _pass(self) -> tuple[int, PublishFailed | None]:
        """Publish what the spool holds, chunk by chunk from the oldest; the confirmed part
        of one chunk is deleted while the next is published. Stops at the first failure."""
        cursor = 0
        published = 0
        removing: asyncio.Task[None] | None = None
        try:
            while True:
                batch = await self.spool.head(CHUNK if self.window > 1 else 1, after=cursor)
                if not batch:
                    return published, None
                cursor = batch[-1].seq
                confirmed, failure = await self._publish(batch)
                published += len(confirmed)
                if removing is not None:
                    await removing
                    removing = None
                if confirmed:
                    removing = asyncio.create_task(self._remove(confirmed))
                if failure is not None:
                    return published, failure
                self.window = WINDOW
        finally:
            if removing is not None:
                await removing

    async def _publish(self, batch: list[Spooled]) -> tuple[list[Spooled], PublishFailed | None]:
        """Publish ``batch`` in order, ``WINDOW`` at a time; after the first failure start no
        more, so the failed message is retried before anything behind it."""
        gate = asyncio.Semaphore(self.window)
        failures: list[PublishFailed] = []

        async def one(item: Spooled) -> bool:
            async with gate:
                if failures:
                    return False
                try:
                    await self.publisher.publish(item.envelope)
                except PublishFailed as exc:
                    failures.append(exc)
                    return False
                except asyncio.CancelledError:
                    if being_cancelled():
                        raise
                    failures.append(PublishFailed("cancelled", "the publish was cancelled"))
                    return False
                except Exception as exc:
                    failures.append(PublishFailed("error", type(exc).__name__))
                    return False
                return True

        results = await asyncio.gather(*(one(item) for item in batch))
        confirmed = [item for item, ok in zip(batch, results, strict=True) if ok]
        return confirmed, (failures[0] if failures else None)

    async def _remove(self, confirmed: list[Spooled]) -> None:
        while True:
            try:
                await self.spool.remove(confirmed)
            except SpoolError as exc:
                # Still stored, so published again later: a duplicate, never a loss.
                log.error("cannot delete drained messages (%s); retrying", exc)
                await asyncio.sleep(MAX_BACKOFF)
                continue
            metrics.SPOOL_DRAINED.inc(len(confirmed))
            return

    async def _repair(self) -> None:
        assert self.repair is not None
        try:
            await self.repair()
        except Exception as exc:
            log.warning("re-declaring the topology after an unroutable publish failed: %s", exc)
