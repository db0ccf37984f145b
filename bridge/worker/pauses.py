"""Pauses a target asked for (``Retry-After``), shared by every worker of a subscriber.

A worker whose forward target answers ``429``/``503`` with ``Retry-After`` pauses its own
:class:`~bridge.worker.pacing.Pacer` and publishes the pause (its length in seconds) to the
subscriber's fanout exchange ``<name>.pauses``; every worker of that subscriber consumes a
queue of its own bound there (server-named, exclusive to its connection, deleted with it)
and pauses too. So a standby worker that takes over a rate-limited subscriber, or another
worker of a plain or ordered one, does not call the target during the pause either.

The pause travels as a length, not a deadline: the workers' clocks need not agree, and a
pause arrives within milliseconds. Fails soft: a pause that cannot be published or is
malformed is logged and dropped (the worker that was told still pauses); a broker loss
re-attaches on the next channel.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from bridge.amqp.pipeline import no_ack_delivery
from bridge.amqp.publisher import Outcome, confirms
from bridge.amqp.topology import pauses_exchange_name
from bridge.worker.pacing import MAX_PAUSE, Pacer

log = logging.getLogger("bridge.worker.pauses")

PUBLISH_TIMEOUT = 5.0


class SharedPauses:
    """Passes ``pacer``'s pauses to the subscriber's other workers, and theirs to it."""

    def __init__(self, subscriber: str, pacer: Pacer) -> None:
        self.subscriber = subscriber
        self.pacer = pacer
        self._exchange = pauses_exchange_name(subscriber)
        self._origin = uuid.uuid4().hex  # our own announcements come back: skip them
        self._channel: AbstractChannel | None = None
        self._sending: set[asyncio.Task[Any]] = set()
        pacer.on_pause(self.announce)

    async def attach(self, channel: AbstractChannel) -> None:
        """Listen on ``channel`` (a new one after each reconnect) and publish through it."""
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        assert declared.queue is not None
        await channel.queue_bind(declared.queue, self._exchange, routing_key="")
        await channel.basic_consume(declared.queue, self._received, no_ack=True)
        self._channel = channel

    def announce(self, seconds: float) -> None:
        channel = self._channel
        if channel is None or channel.is_closed:
            return
        task = asyncio.get_running_loop().create_task(self._publish(channel, seconds))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish(self, channel: AbstractChannel, seconds: float) -> None:
        # Through the one confirmed publish of the channel (its own queue is bound, so the
        # fanout always routes it).
        outcome = await confirms(channel).publish(
            f"{seconds:.3f}".encode(),
            exchange=self._exchange,
            routing_key="",
            properties=Basic.Properties(app_id=self._origin, content_type="text/plain"),
            timeout=PUBLISH_TIMEOUT,
        )
        if outcome != Outcome.CONFIRMED:
            log.warning(
                "could not share a pause with the other workers (%s)",
                outcome,
                extra={"subscriber": self.subscriber},
            )

    async def _received(self, message: DeliveredMessage) -> None:
        no_ack_delivery(message)  # its tag must not hold back the channel's acks
        if message.header.properties.app_id == self._origin:
            return
        try:
            seconds = float(message.body.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            log.warning("ignored a malformed pause", extra={"subscriber": self.subscriber})
            return
        if 0 < seconds <= MAX_PAUSE:
            self.pacer.pause(seconds, shared=False)
