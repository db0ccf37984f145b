"""One subscriber at work: consume ``<name>``, call the handler, and ack, retry or
dead-letter.

The subscriber has its own :class:`~bridge.amqp.connection.BrokerLink` (connection and
confirm channel, re-established after a loss, topology re-declared, consumer re-registered).
A message is acked only after the handler returned, or after its copy on the next step
(``<name>.retry.<i>`` or ``<name>.dlq``) was confirmed by the broker: a crash at any point
repeats a delivery at worst, never loses one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import ChannelPreconditionFailed, DeliveryError, PublishError

from bridge.amqp.connection import BrokerLink
from bridge.amqp.topology import declare, settings_topology
from bridge.core import metrics
from bridge.core.contract import rfc3339, routing_key
from bridge.core.settings import Settings
from bridge.core.tasks import cancel_and_wait
from bridge.errors import CommandError, PermanentError
from bridge.worker.acks import Settler, redelivery_count
from bridge.worker.breaker import CircuitBreaker
from bridge.worker.forwarder import Forwarder, Throttled
from bridge.worker.message import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    Message,
    copy_properties,
    delivery_number,
    error_text,
    event_of,
    plain_headers,
)
from bridge.worker.pacing import Pacer
from bridge.worker.retry import DeadLetter, Ladder, Retry
from bridge.worker.subscribers import Handler, Subscriber

log = logging.getLogger("bridge.worker.subscription")

SHUTDOWN_GRACE = 8.0
"""Seconds in-flight handlers get to finish on SIGTERM (docker stops after 10)."""
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


_EXPECTED = (PermanentError, HandlerTimeout)


class Subscription:
    """One subscriber at work: its queues, consumer, handler and retry ladder."""

    def __init__(
        self,
        settings: Settings,
        sub: Subscriber,
        handler: Handler,
    ) -> None:
        self.sub = sub
        self.handler = handler
        # A forwarder pauses its subscriber while its target is down; a handler cannot.
        self.breaker: CircuitBreaker | None = (
            handler.breaker if isinstance(handler, Forwarder) else None
        )
        self.ladder = Ladder(sub.name, sub.retry_delays_ms, sub.in_process_tries)
        self.settle = Settler()
        self._exchange = settings.exchange
        self.pacer = Pacer(sub.name, sub.rate_limit)
        self.topology = settings_topology(settings) + sub.topology(settings.exchange)
        self.link = BrokerLink(
            settings.amqp_urls, self._on_channel, name=f"mintsoft-bridge worker {sub.name}"
        )
        self.ready = asyncio.Event()
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._channel: AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._lock = asyncio.Lock()
        self._stopping = False
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._count = {
            outcome: metrics.WORKER_MESSAGES.labels(sub.name, outcome)
            for outcome in ("consumed", "acked", "retried", "dead_lettered")
        }
        self._seconds = metrics.HANDLER_SECONDS.labels(sub.name)
        self._handler_is_code = not isinstance(handler, Forwarder)
        self._log = {"subscriber": sub.name}
        if self.breaker is not None:
            self.breaker.on_change(lambda _open: self._spawn(self._sync_consumer()))

    # --- consuming --------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start()

    def _paused(self) -> bool:
        return self.breaker is not None and self.breaker.is_open

    async def _declare(self, channel: AbstractChannel) -> None:
        try:
            await declare(channel, self.topology)
        except ChannelPreconditionFailed as exc:
            if not self.failed.done():
                self.failed.set_exception(
                    CommandError(
                        f"subscriber {self.sub.name!r}: a queue or exchange exists with other "
                        f"arguments ({exc}): delete the old queues of this subscriber (after "
                        "draining them) or keep the retry_delays, filters and partitions they "
                        "were declared with"
                    )
                )
            raise
        except Exception as exc:
            if "x-consistent-hash" in str(exc) and not self.failed.done():
                self.failed.set_exception(
                    CommandError(
                        f"subscriber {self.sub.name!r}: ordered = true needs RabbitMQ's plugin "
                        "rabbitmq_consistent_hash_exchange: run rabbitmq-plugins enable "
                        "rabbitmq_consistent_hash_exchange"
                    )
                )
            raise

    async def _on_channel(self, channel: AbstractChannel) -> None:
        await self._declare(channel)
        await channel.basic_qos(prefetch_count=self.sub.prefetch)
        async with self._lock:
            self._channel = channel
            self._consumer_tag = None
            if not self._stopping and not self._paused():
                ok = await channel.basic_consume(self.sub.name, self._deliver)
                self._consumer_tag = ok.consumer_tag
        self.ready.set()
        state = "consuming" if self._consumer_tag is not None else "not consuming (paused)"
        log.info("%s %s", state, self.sub.name, extra=self._log)

    async def _sync_consumer(self) -> None:
        """Start or cancel the consumer so it matches ``not stopping and not paused``."""
        async with self._lock:
            channel = self._channel
            if channel is None or channel.is_closed:
                return
            wanted = not self._stopping and not self._paused()
            try:
                if wanted and self._consumer_tag is None:
                    ok = await channel.basic_consume(self.sub.name, self._deliver)
                    self._consumer_tag = ok.consumer_tag
                    log.info("resumed consuming %s", self.sub.name, extra=self._log)
                elif not wanted and self._consumer_tag is not None:
                    tag, self._consumer_tag = self._consumer_tag, None
                    await channel.basic_cancel(tag)
                    log.info("stopped consuming %s", self.sub.name, extra=self._log)
            except Exception as exc:  # the link reconnects and calls _on_channel again
                log.warning("consumer change failed (%s)", exc, extra=self._log)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _deliver(self, delivered: DeliveredMessage) -> None:
        if self._stopping or self._paused():
            # Not ours to try now: back to the queue, no attempt spent.
            await self.settle(delivered, ack=False)
            return
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            await self._process(delivered)
        finally:
            self._in_flight.discard(task)

    # --- one message ------------------------------------------------------------------

    async def _process(self, delivered: DeliveredMessage) -> None:
        properties = delivered.header.properties
        headers = plain_headers(properties.headers)
        current = delivered.routing_key or ""
        delivery = delivery_number(headers)
        event = event_of(properties, headers, current)
        message = Message(
            event=event,
            body=delivered.body,
            message_id=properties.message_id or "",
            headers=headers,
            # A retry step or a replay re-publishes to the queue by name: the handler still
            # sees the webhook's own key, whatever route this copy took.
            routing_key=current if delivered.exchange == self._exchange else routing_key(event),
            delivery_routing_key=current,
            subscriber=self.sub.name,
            attempt=self.ladder.handler_attempt(delivery, 1),
            delivery=delivery,
            content_type=properties.content_type or "application/json",
            redelivered=bool(delivered.redelivered),
        )
        self._count["consumed"].inc()
        redeliveries = redelivery_count(headers)
        if self.ladder.crash_loop(redeliveries):
            reason = (
                f"delivered {redeliveries} times without an answer: a worker crashed or lost "
                "its broker connection while handling it every time"
            )
            await self._failed(delivered, message, CrashLoop(reason))
            return
        try:
            await self._call(message)
        except Exception as exc:
            await self._failed(delivered, message, exc)
            return
        if await self.settle(delivered, ack=True):
            self._count["acked"].inc()
            log.info("%s webhook handled", message.event, extra=message.log_fields())

    def _retry_now(self, exc: BaseException) -> bool:
        return not isinstance(exc, PermanentError) and not self._stopping and not self._paused()

    async def _call(self, message: Message) -> None:
        # The first try runs without tenacity's machinery (it costs more than the rest of a
        # delivery); only a message that failed goes through its loop for the other tries.
        ladder = self.ladder
        message.attempt = ladder.handler_attempt(message.delivery, 1)
        try:
            await self._call_once(message)
            return
        except Exception as exc:
            if ladder.in_process_tries <= 1 or not self._retry_now(exc):
                raise
        await asyncio.sleep(ladder.backoff(1))
        async for attempt in ladder.in_process(self._retry_now, after=1):
            with attempt:
                message.attempt = ladder.handler_attempt(
                    message.delivery, attempt.retry_state.attempt_number + 1
                )
                await self._call_once(message)

    async def _call_once(self, message: Message) -> None:
        """One try. A :class:`Throttled` answer pauses the subscriber and calls again, without
        spending the try, for up to :data:`MAX_THROTTLED_HOLD` seconds."""
        throttled = 0.0
        while True:
            await self.pacer.wait()
            try:
                await self._timed_call(message)
                return
            except Throttled as exc:
                if self._stopping or throttled >= MAX_THROTTLED_HOLD:
                    raise
                throttled += self.pacer.pause(exc.retry_after)

    async def _timed_call(self, message: Message) -> None:
        started = time.perf_counter()
        deadline = asyncio.timeout(self.sub.timeout)
        try:
            async with deadline:
                await self.handler(message)
        except Throttled as busy:
            log.info("target busy: %s", str(busy)[:300], extra=message.log_fields())
            raise
        except Exception as error:
            exc = error
            if deadline.expired():
                exc = HandlerTimeout(f"no return within {self.sub.timeout:g}s")
            log.warning("handler failed: %s", error_text(exc)[:300], extra=message.log_fields())
            raise exc from None
        finally:
            self._seconds.observe(time.perf_counter() - started)

    async def _failed(self, delivered: DeliveredMessage, message: Message, exc: Exception) -> None:
        permanent = isinstance(exc, PermanentError)
        if not permanent and (self._stopping or self._paused()):
            # The target is down or we are stopping: not the message's fault, spend nothing.
            await self.settle(delivered, ack=False)
            log.info("returned to the queue (paused or stopping)", extra=message.log_fields())
            return
        await self._next_step(delivered, message, exc)

    async def _next_step(
        self, delivered: DeliveredMessage, message: Message, exc: Exception
    ) -> None:
        """Move the message one step along the ladder (or to the DLQ), then ack it."""
        fields = message.log_fields()
        permanent = isinstance(exc, PermanentError)
        step = self.ladder.after_failure(message.delivery, permanent)
        headers = dict(delivered.header.properties.headers or {})
        headers[ATTEMPT_HEADER] = step.attempt
        if isinstance(step, DeadLetter):
            headers[ERROR_HEADER] = error_text(exc)
            headers[FAILED_AT_HEADER] = rfc3339(time.time())
        if not await self._move(delivered, step.queue, headers):
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

    async def _move(self, delivered: DeliveredMessage, queue: str, headers: dict[str, Any]) -> bool:
        """Publish a copy to ``queue``, wait for the confirm, then ack the original."""
        channel = delivered.channel
        properties = copy_properties(delivered.header.properties, headers)
        try:
            await channel.basic_publish(
                delivered.body,
                exchange="",
                routing_key=queue,
                properties=properties,
                mandatory=True,
                timeout=MOVE_TIMEOUT,
            )
            # aiormq raises DeliveryError on a nack and PublishError on a return.
            self.link.note_confirm()
        except (DeliveryError, TimeoutError) as exc:  # returned, nacked, or no confirm
            if isinstance(exc, DeliveryError) and not isinstance(exc, PublishError):
                self.link.note_nack()  # a channel RabbitMQ keeps nacking is renewed
            # The copy is not safe: keep the original, retried after a pause (no hot loop).
            log.error("could not move a message to %s (%r); it stays queued", queue, exc)
            await asyncio.sleep(MOVE_FAILED_PAUSE)
            await self.settle(delivered, ack=False)
            return False
        except Exception as exc:  # channel or connection gone: the broker redelivers
            log.warning("connection lost while moving a message to %s (%s)", queue, exc)
            return False
        return await self.settle(delivered, ack=True)

    # --- stopping ---------------------------------------------------------------------

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop consuming, let in-flight messages finish for up to ``grace`` seconds, then
        close: what is still unacked goes back to the queue."""
        self._stopping = True
        await self._sync_consumer()
        if self._in_flight:
            log.info("waiting for %d in-flight messages", len(self._in_flight), extra=self._log)
            await asyncio.wait(set(self._in_flight), timeout=grace)
        for task in set(self._background):
            await cancel_and_wait(task)
        await self.link.close()
