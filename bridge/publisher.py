"""Confirmed publishing of envelopes to the webhook exchange.

A publish succeeds only on the broker's ``basic.ack``; a ``basic.return`` (unroutable), a
``basic.nack``, a closed channel, no broker, or no confirm within the timeout all raise
:class:`PublishFailed`. Nothing here ever waits without a bound.
"""

from __future__ import annotations

import asyncio
import time

from aiormq.exceptions import AMQPError, DeliveryError, PublishError

from bridge import metrics
from bridge.connection import BrokerLink
from bridge.envelope import Envelope
from bridge.pipeline import PublishWriter


class PublishFailed(Exception):
    """The broker did not confirm the message; ``reason`` is a short metric-safe word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Publisher:
    """Publishes envelopes persistent and mandatory, and waits for the confirm."""

    def __init__(self, link: BrokerLink, exchange: str, timeout: float) -> None:
        self.link = link
        self.exchange = exchange
        self.timeout = timeout
        # Identical webhooks share a message id, and aiormq matches a basic.return to its
        # publish by message id: publish such twins one after the other, never together.
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        self._writer = PublishWriter(exchange)

    @property
    def connected(self) -> bool:
        return self.link.channel is not None

    async def publish(self, envelope: Envelope, timeout: float | None = None) -> None:
        """Publish and wait for the confirm, at most ``timeout`` seconds in all."""
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        key = envelope.message_id
        while (twin := self._in_flight.get(key)) is not None:
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    await asyncio.shield(twin)
            except TimeoutError:
                raise PublishFailed(
                    "timeout", "an identical message is still unconfirmed"
                ) from None
            except PublishFailed:
                pass
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        try:
            await self._publish_once(envelope, max(deadline - time.monotonic(), 0.001))
        except PublishFailed as exc:
            done.set_exception(exc)
            done.exception()  # retrieved here; twins only need to know it finished
            raise
        else:
            done.set_result(None)
        finally:
            del self._in_flight[key]

    async def _publish_once(self, envelope: Envelope, timeout: float) -> None:
        channel = self.link.channel
        if channel is None:
            _NO_BROKER.inc()
            raise PublishFailed("no_broker", "not connected to the broker")
        started = time.perf_counter()
        try:
            confirmation, tag = self._writer.send(channel, envelope)
        except (AMQPError, ConnectionError, RuntimeError) as exc:
            _CHANNEL_CLOSED.inc()
            raise PublishFailed("channel_closed", type(exc).__name__) from None
        try:
            async with asyncio.timeout(timeout):
                await confirmation
        except TimeoutError:
            _TIMEOUT.inc()
            raise PublishFailed("timeout", f"no confirm within {timeout:.1f}s") from None
        except PublishError:
            _RETURNED.inc()
            raise PublishFailed("returned", "unroutable: the exchange routed it nowhere") from None
        except DeliveryError:
            _NACKED.inc()
            raise PublishFailed("nacked", "the broker refused the message") from None
        except Exception as exc:  # aiormq rejects pending confirms with the close reason
            _CHANNEL_CLOSED.inc()
            raise PublishFailed("channel_closed", type(exc).__name__) from None
        finally:
            self._writer.forget(channel, envelope.message_id, tag)
        _CONFIRMED.inc()
        _PUBLISH_SECONDS.observe(time.perf_counter() - started)


_NO_BROKER = metrics.PUBLISH_RESULTS.labels("no_broker")
_CHANNEL_CLOSED = metrics.PUBLISH_RESULTS.labels("channel_closed")
_TIMEOUT = metrics.PUBLISH_RESULTS.labels("timeout")
_RETURNED = metrics.PUBLISH_RESULTS.labels("returned")
_NACKED = metrics.PUBLISH_RESULTS.labels("nacked")
_CONFIRMED = metrics.PUBLISH_RESULTS.labels("confirmed")
_PUBLISH_SECONDS = metrics.PUBLISH_SECONDS
