"""One message through one subscriber: its tries, a delivery record per attempt, then the ack,
a step along the ladder, the DLQ, or back to the queue.

Both kinds of subscription hand their deliveries to a :class:`Handling` (by composition):
the plain one (:mod:`bridge.worker.subscription`) and each partition consumer of an ordered
one (:mod:`bridge.worker.ordered`), which differ only in the data they give it (the ladder:
queue steps, or waits in place) and in how a message is given back.

The one retry loop is :meth:`Handling._tries`, written out: a try; a ``Throttled`` answer
pauses the subscriber and tries again without spending the try (for up to
:data:`MAX_THROTTLED_HOLD` seconds); another failure is tried again after the ladder's
backoff, up to ``in_process_tries``; then the ladder says what next (a wait in place for an
ordered subscriber, else a move to the next retry queue or the DLQ).

Guarantees: a message is acked only after the handler returned, or after its copy on the
next step was confirmed by the broker; a crash at any point repeats a delivery at worst,
never loses one. Every attempt's record (:mod:`bridge.core.records`) is published on the
message's own channel before its ack (:func:`bridge.amqp.deliveries.add_record`: the
records gathered while the channel's acks wait go in one stream message, written before
those acks; never waited for, a refused one is counted), so a crash between the two leaves
a record of an attempt whose message comes again, never an ack without its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiormq.abc import DeliveredMessage

from bridge.amqp.connection import BrokerLink
from bridge.amqp.deliveries import add_record
from bridge.amqp.publisher import Outcome, confirms
from bridge.core import logs, metrics
from bridge.core.contract import HEADER_ORDER_NUMBER, rfc3339, routing_key
from bridge.core.records import Outcome as Recorded
from bridge.core.records import RecordBodies, Source, new_record_id, now_rfc3339
from bridge.errors import PermanentError
from bridge.worker.acks import Settler, redelivery_count
from bridge.worker.deadlines import IN_TIME, TIMED_OUT, Deadlines
from bridge.worker.forwarder import LAST_ANSWER, Forwarder, Throttled
from bridge.worker.message import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    Message,
    copy_properties,
    delivered_message,
    delivery_number,
    error_text,
    event_of,
    plain_headers,
)
from bridge.worker.pacing import Pacer
from bridge.worker.retry import DeadLetter, Ladder, Retry, WaitInPlace
from bridge.worker.subscribers import Handler, Subscriber

log = logging.getLogger("bridge.worker.subscription")

MOVE_TIMEOUT = 10.0
"""Seconds to wait for the confirm of a copy on the ladder or in the DLQ."""
MOVE_FAILED_PAUSE = 1.0
MAX_THROTTLED_HOLD = 600.0
"""Seconds one message may wait out ``Retry-After`` pauses before a throttle counts as a
failed try (it is held unacked meanwhile)."""


class HandlerTimeout(Exception):
    """The handler did not return within the subscriber's ``timeout``."""


class CrashLoop(PermanentError):
    """The broker redelivered the message again and again without an ack or a nack."""


class GiveBack(Exception):
    """Not handled (stopping, or the target down too long): the message goes back."""


_EXPECTED = (PermanentError, HandlerTimeout)


@dataclass(frozen=True)
class SubscriptionKind:
    """What a kind of subscription gives its :class:`Handling`: its ``ladder`` (queue
    steps, or waits in place); ``give_back``, which returns a message not handled to its
    queue (a nack, or, for an ordered subscriber, leaving it unacked for its channel's
    close); ``hold``, when given, which waits while paused and says whether to go on (an
    ordered subscriber holds its message instead of giving it back)."""

    ladder: Ladder
    give_back: Callable[[DeliveredMessage], Awaitable[None]]
    hold: Callable[[], Awaitable[bool]] | None = None


class Handling:
    """How one subscriber handles a delivered message (see the module docstring).

    ``kind``: what its kind of subscription gives it (:class:`SubscriptionKind`);
    ``paused`` says whether the subscriber is paused (its target down); ``records`` turns
    the delivery records off (for the bench's side by side).
    """

    def __init__(
        self,
        exchange: str,
        sub: Subscriber,
        handler: Handler,
        kind: SubscriptionKind,
        link: BrokerLink,
        *,
        paused: Callable[[], bool],
        records: bool = True,
    ) -> None:
        self.exchange = exchange
        self.sub = sub
        self.handler = handler
        self.kind = kind
        self.link = link
        self.paused = paused
        self.records = records
        self._bodies = RecordBodies(sub.name, Source.WORKER, None)
        self.settle = Settler()
        # An ordered subscriber's partitions may run in different workers: a bucket each.
        self.pacer = Pacer(sub.name, sub.rate_limit, sub.partitions if sub.ordered else 1)
        self.stopping = False
        self.stopped = asyncio.Event()
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests count the waits
        self._count = {
            outcome: metrics.WORKER_MESSAGES.labels(sub.name, outcome)
            for outcome in ("consumed", "acked", "retried", "dead_lettered")
        }
        self._consumed = self._count["consumed"]
        self._acked = self._count["acked"]
        self._seconds = metrics.observer(metrics.HANDLER_SECONDS.labels(sub.name))
        self._handler_is_code = not isinstance(handler, Forwarder)
        self._deadlines = Deadlines(sub.timeout)

    def stop(self) -> None:
        self.stopping = True
        self.stopped.set()

    def message(self, delivered: DeliveredMessage) -> Message:
        properties = delivered.header.properties
        headers = plain_headers(properties.headers)
        current = delivered.routing_key or ""
        delivery = delivery_number(headers)
        event = event_of(properties, headers, current)
        return delivered_message(
            event,
            delivered.body,
            properties.message_id or "",
            headers,
            # A retry step or a replay re-publishes to the queue by name: the handler still
            # sees the webhook's own key, whatever route this copy took.
            current if delivered.exchange == self.exchange else routing_key(event),
            current,
            self.sub.name,
            self.kind.ladder.handler_attempt(delivery, 1),
            delivery,
            properties.content_type or "application/json",
            bool(delivered.redelivered),
        )

    async def process(
        self, delivered: DeliveredMessage, task: asyncio.Task[Any] | None = None
    ) -> None:
        """Handle ``delivered`` in ``task``, the current one (given when the caller knows
        it, which spares a look-up per message)."""
        message = self.message(delivered)
        self._consumed.inc()
        redeliveries = redelivery_count(message.headers)
        if self.kind.ladder.crash_loop(redeliveries):
            reason = (
                f"delivered {redeliveries} times without an answer: a worker crashed or lost "
                "its broker connection while handling it every time"
            )
            await self._next_step(delivered, message, CrashLoop(reason), None)
            return
        error, took = await self._tries(delivered, message, task)
        if error is None:
            if await self.settle(delivered, ack=True):
                self._acked.inc()
                # One line per message: without a LogRecord in the usual set-up.
                logs.info(log, "%s webhook handled", (message.event,), message.log_fields())
            return
        permanent = isinstance(error, PermanentError)
        # (A subscriber that holds while paused gave up holding with GiveBack.)
        paused = self.kind.hold is None and self.paused()
        if isinstance(error, GiveBack) or (not permanent and (self.stopping or paused)):
            # The target is down or we are stopping: not the message's fault, spend nothing.
            if not isinstance(error, GiveBack):
                self._record(delivered, message, Recorded.FAILED, error, took)
            await self.kind.give_back(delivered)
            log.info("given back to the queue (paused or stopping)", extra=message.log_fields())
            return
        await self._next_step(delivered, message, error, took)

    async def _tries(
        self, delivered: DeliveredMessage, message: Message, task: asyncio.Task[Any] | None = None
    ) -> tuple[Exception | None, float | None]:
        """The one retry loop: ``(None, ms)`` once delivered (its record sent), else the
        last error for the ladder's next step, or :class:`GiveBack`."""
        ladder = self.kind.ladder
        tries = 0  # failed tries of this delivery
        throttled = 0.0
        pacer = self.pacer
        while True:
            if not pacer.open:
                await pacer.wait()
            message.attempt = ladder.handler_attempt(message.delivery, tries + 1)
            error, took = await self._try(message, task)
            if error is None:
                self._record(delivered, message, Recorded.DELIVERED, None, took)
                return None, took
            if (
                isinstance(error, Throttled)
                and not self.stopping
                and throttled < MAX_THROTTLED_HOLD
            ):
                paused = self.pacer.pause(error.retry_after)
                self._record(delivered, message, Recorded.THROTTLED, error, took, paused)
                throttled += paused
                continue
            tries += 1
            if isinstance(error, PermanentError) or self.stopping:
                return error, took
            if self.paused():
                if self.kind.hold is None:
                    return error, took
                self._record(delivered, message, Recorded.FAILED, error, took)
                if not await self.kind.hold():
                    return GiveBack(), took
                tries = 0  # the target's outage is not the message's fault: same round
                continue
            if tries < ladder.in_process_tries:
                self._record(delivered, message, Recorded.FAILED, error, took)
                await self.sleep(ladder.backoff(tries))
                continue
            step = ladder.after_failure(message.delivery)
            if not isinstance(step, WaitInPlace):
                return error, took
            self._record(delivered, message, Recorded.FAILED, error, took)
            log.warning(
                "retrying in place in %gs (later events of this partition wait)",
                step.delay_ms / 1000,
                extra=message.log_fields(),
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step.delay_ms / 1000):
                    await self.stopped.wait()
            if self.stopping:
                return GiveBack(), took
            message.delivery, tries = step.attempt, 0

    async def _try(
        self, message: Message, task: asyncio.Task[Any] | None = None
    ) -> tuple[Exception | None, float]:
        """One call of the handler, bounded by the subscriber's timeout (as
        ``asyncio.timeout()`` would, with one timer for all the calls in flight)."""
        LAST_ANSWER.set(None)
        if task is None:
            task = asyncio.current_task()
            assert task is not None
        deadlines = self._deadlines
        cancelling = deadlines.start(task)
        started = time.perf_counter()
        try:
            await self.handler(message)
        except asyncio.CancelledError:
            if deadlines.finish(task, cancelling) != TIMED_OUT:
                raise  # not (only) our deadline: a shutdown's, or the handler's own
            return self._failed(message, self._timed_out(), started)
        except Throttled as busy:
            deadlines.finish(task, cancelling)
            log.info("target busy: %s", str(busy)[:300], extra=message.log_fields())
            return busy, self._took(started)
        except Exception as error:
            ended = deadlines.finish(task, cancelling)
            return self._failed(message, error if ended == IN_TIME else self._timed_out(), started)
        deadlines.finish(task, cancelling)
        return None, self._took(started)

    def _timed_out(self) -> HandlerTimeout:
        return HandlerTimeout(f"no return within {self.sub.timeout:g}s")

    def _failed(
        self, message: Message, exc: Exception, started: float
    ) -> tuple[Exception | None, float]:
        log.warning("handler failed: %s", error_text(exc)[:300], extra=message.log_fields())
        return exc, self._took(started)

    def _took(self, started: float) -> float:
        seconds = time.perf_counter() - started
        self._seconds(seconds)
        return round(seconds * 1000, 3)

    def _record(
        self,
        delivered: DeliveredMessage,
        message: Message,
        outcome: Recorded,
        error: BaseException | None,
        took: float | None,
        retry_after: float | None = None,
    ) -> None:
        if not self.records:
            return
        answer = LAST_ANSWER.get()
        record_id = new_record_id()
        body = self._bodies.body(
            record_id,
            message.message_id,
            message.event,
            message.order_id,
            _text(message.headers.get(HEADER_ORDER_NUMBER)),
            message.attempt,
            outcome,
            answer.status if answer is not None else None,
            answer.text if answer is not None else None,
            error_text(error) if error is not None else None,
            took,
            now_rfc3339(),
            retry_after,
        )
        add_record(delivered.channel, self.exchange, record_id, body)

    async def _next_step(
        self,
        delivered: DeliveredMessage,
        message: Message,
        exc: Exception,
        took: float | None,
    ) -> None:
        """Move the message one step along the ladder (or to the DLQ), then ack it."""
        fields = message.log_fields()
        permanent = isinstance(exc, PermanentError)
        step = self.kind.ladder.after_failure(message.delivery, permanent)
        assert not isinstance(step, WaitInPlace)
        headers = dict(delivered.header.properties.headers or {})
        headers[ATTEMPT_HEADER] = step.attempt
        if isinstance(step, DeadLetter):
            headers[ERROR_HEADER] = error_text(exc)
            headers[FAILED_AT_HEADER] = rfc3339(time.time())
        recorded = Recorded.DEAD if isinstance(step, DeadLetter) else Recorded.FAILED
        if not await self._move(delivered, message, step.queue, headers, (recorded, exc, took)):
            return
        # A bug in a handler shows its traceback once per message, with its last failure
        # before the DLQ; a retry step is one line with the reason. Expected failures
        # (PermanentError, the forwarder's HTTP answers, timeouts) never show one.
        trace = exc if self._handler_is_code and not isinstance(exc, _EXPECTED) else None
        if isinstance(step, Retry):
            self._count["retried"].inc()
            log.warning(
                "moved to %s (retry in %gs): %s",
                step.queue,
                step.delay_ms / 1000,
                error_text(exc)[:300],
                extra=fields,
            )
        else:
            self._count["dead_lettered"].inc()
            log.error(
                "dead-lettered to %s: %s",
                step.queue,
                error_text(exc)[:300],
                exc_info=trace,
                extra=fields,
            )

    async def _move(
        self,
        delivered: DeliveredMessage,
        message: Message,
        queue: str,
        headers: dict[str, Any],
        record: tuple[Recorded, Exception, float | None],
    ) -> bool:
        """Publish a copy to ``queue``, wait for the confirm, record, then ack the original."""
        properties = copy_properties(delivered.header.properties, headers)
        outcome = await confirms(delivered.channel).publish(
            delivered.body, routing_key=queue, properties=properties, timeout=MOVE_TIMEOUT
        )
        recorded, exc, took = record
        if outcome is Outcome.CONFIRMED:
            self.link.note_confirm()
            self._record(delivered, message, recorded, exc, took)
            return await self.settle(delivered, ack=True)
        self._record(delivered, message, Recorded.FAILED, exc, took)
        if outcome is Outcome.CLOSED:  # channel or connection gone: the broker redelivers
            log.warning("connection lost while moving a message to %s", queue)
            return False
        if outcome is Outcome.NACKED:
            self.link.note_nack()  # a channel RabbitMQ keeps nacking is renewed
        # The copy is not safe: keep the original, retried after a pause (no hot loop).
        log.error("could not move a message to %s (%s); it stays queued", queue, outcome)
        await asyncio.sleep(MOVE_FAILED_PAUSE)
        await self.settle(delivered, ack=False)
        return False


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
