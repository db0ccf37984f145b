"""Confirmed publishing of envelopes to the webhook exchange.

A publish succeeds only on the broker's ``basic.ack``; a ``basic.return`` (unroutable), a
``basic.nack``, a closed channel, no broker, or no confirm within the timeout all raise
:class:`PublishFailed`. Nothing here ever waits without a bound.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiormq.abc import AbstractChannel
from aiormq.exceptions import AMQPError, DeliveryError, PublishError
from pamqp.commands import Basic

from bridge.amqp.connection import BrokerLink
from bridge.amqp.pipeline import FAST, PublishWriter
from bridge.core import metrics
from bridge.core.contract import Envelope
from bridge.core.tasks import being_cancelled

log = logging.getLogger("bridge.amqp.publisher")


class PublishFailed(Exception):
    """The broker did not confirm the message; ``reason`` is a short metric-safe word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Publisher:
    """Publishes envelopes persistent and mandatory, and waits for the confirm.

    On the fast path (:mod:`bridge.amqp.pipeline`) identical webhooks (one message id) are
    published together like any others. On aiormq's public path, which matches a
    ``basic.return`` to its publish by message id alone, such twins are published one
    after the other.
    """

    def __init__(self, link: BrokerLink, exchange: str, timeout: float) -> None:
        self.link = link
        self.exchange = exchange
        self.timeout = timeout
        self._in_flight: dict[str, asyncio.Future[None] | None] = {}
        self._writer = PublishWriter(exchange)

    @property
    def connected(self) -> bool:
        return self.link.channel is not None

    async def publish(self, envelope: Envelope, timeout: float | None = None) -> None:
        """Publish and wait for the confirm, at most ``timeout`` seconds in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        channel = self.link.channel
        if channel is None:
            _NO_BROKER.inc()
            raise PublishFailed("no_broker", "not connected to the broker")
        if self._writer.path(channel) == FAST:
            await self._publish_fast(channel, envelope, deadline)
        else:
            await self._publish_one_of_twins(envelope, deadline)

    async def _publish_fast(
        self, channel: AbstractChannel, envelope: Envelope, deadline: float
    ) -> None:
        started = time.perf_counter()
        try:
            pending = self._writer.send(channel, envelope)
        except (AMQPError, ConnectionError, RuntimeError) as exc:
            _CHANNEL_CLOSED.inc()
            raise PublishFailed("channel_closed", type(exc).__name__) from None
        loop = asyncio.get_running_loop()
        # A bare timer that cancels the confirmation is much cheaper per publish than
        # asyncio.timeout() or wait_for(); a CancelledError while our own task is not being
        # cancelled can only come from it.
        timer = loop.call_at(deadline, pending.expire)
        try:
            result = await pending.future
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            _TIMEOUT.inc()
            waited = time.perf_counter() - started
            raise PublishFailed("timeout", f"no confirm within {waited:.1f}s") from None
        except DeliveryError:  # how aiormq reports a basic.nack
            _NACKED.inc()
            self.link.note_nack()
            raise PublishFailed("nacked", "the broker refused the message") from None
        except Exception as exc:  # aiormq rejects pending confirms with the close reason
            _CHANNEL_CLOSED.inc()
            raise PublishFailed("channel_closed", type(exc).__name__) from None
        finally:
            timer.cancel()
            self._writer.finish(channel, pending)
        if pending.returned or not isinstance(result, Basic.Ack):
            _RETURNED.inc()
            raise PublishFailed("returned", "unroutable: the exchange routed it nowhere")
        self.link.note_confirm()
        _CONFIRMED.inc()
        _PUBLISHED_BYTES.inc(len(envelope.body))  # the archive's size estimate reads it
        _PUBLISH_SECONDS.observe(time.perf_counter() - started)

    async def _publish_one_of_twins(self, envelope: Envelope, deadline: float) -> None:
        """The public path: wait, within the deadline, while a twin is in flight."""
        loop = asyncio.get_running_loop()
        key = envelope.message_id
        in_flight = self._in_flight
        while key in in_flight:
            waiter = in_flight[key]
            if waiter is None:
                waiter = in_flight[key] = loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(waiter)
            except TimeoutError:
                raise PublishFailed(
                    "timeout", "an identical message is still unconfirmed"
                ) from None
        in_flight[key] = None
        try:
            await self._publish_public(envelope, deadline)
        finally:
            waiter = in_flight.pop(key)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _publish_public(self, envelope: Envelope, deadline: float) -> None:
        channel = self.link.channel
        if channel is None:
            _NO_BROKER.inc()
            raise PublishFailed("no_broker", "not connected to the broker")
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                result = await channel.basic_publish(
                    envelope.body,
                    exchange=self.exchange,
                    routing_key=envelope.routing_key,
                    properties=envelope.properties(),
                    mandatory=True,
                )
        except TimeoutError:
            _TIMEOUT.inc()
            waited = time.perf_counter() - started
            raise PublishFailed("timeout", f"no confirm within {waited:.1f}s") from None
        except PublishError:  # a basic.return, with on_return_raises
            result = None
        except DeliveryError:
            _NACKED.inc()
            self.link.note_nack()
            raise PublishFailed("nacked", "the broker refused the message") from None
        except Exception as exc:  # not connected, or the channel closed meanwhile
            _CHANNEL_CLOSED.inc()
            raise PublishFailed("channel_closed", type(exc).__name__) from None
        if not isinstance(result, Basic.Ack):  # a return (or no confirm mode at all)
            _RETURNED.inc()
            raise PublishFailed("returned", "unroutable: the exchange routed it nowhere")
        self.link.note_confirm()
        _CONFIRMED.inc()
        _PUBLISHED_BYTES.inc(len(envelope.body))
        _PUBLISH_SECONDS.observe(time.perf_counter() - started)


_NO_BROKER = metrics.PUBLISH_RESULTS.labels("no_broker")
_CHANNEL_CLOSED = metrics.PUBLISH_RESULTS.labels("channel_closed")
_TIMEOUT = metrics.PUBLISH_RESULTS.labels("timeout")
_RETURNED = metrics.PUBLISH_RESULTS.labels("returned")
_NACKED = metrics.PUBLISH_RESULTS.labels("nacked")
_CONFIRMED = metrics.PUBLISH_RESULTS.labels("confirmed")
_PUBLISH_SECONDS = metrics.PUBLISH_SECONDS
_PUBLISHED_BYTES = metrics.PUBLISHED_BYTES
