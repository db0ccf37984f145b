"""Settling a delivery: ack it, or return it to its queue. Acks of one loop turn leave in
one socket write (:class:`~bridge.amqp.pipeline.AckWriter`); a channel that is gone makes
the settle report False, and the broker then redelivers the message (never lost)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage

from bridge.amqp.pipeline import AckWriter

log = logging.getLogger("bridge.worker.acks")

ACK_WRITE_TIMEOUT = 5.0
"""Seconds to wait for buffered acks to be written before a channel is closed."""


class Settler:
    """One subscription's acks and returns, batched per loop turn."""

    def __init__(self) -> None:
        self._writer = AckWriter()

    async def __call__(self, delivered: DeliveredMessage, ack: bool) -> bool:
        """Ack, or return to the queue; False when the channel is gone."""
        tag = delivered.delivery_tag
        assert tag is not None
        try:
            self._writer.settle(delivered.channel, tag, ack)
        except Exception as exc:
            log.warning("ack/nack lost with its channel (%s); the broker will redeliver", exc)
            return False
        return True

    async def written(self, channel: AbstractChannel, timeout: float = ACK_WRITE_TIMEOUT) -> bool:
        """Wait until the acks given for ``channel`` left for the broker (call it before
        closing the channel: an ack still buffered would be lost with it)."""
        return await self._writer.written(channel, timeout)


def redelivery_count(headers: Mapping[str, Any]) -> int:
    """How often the broker handed this message out before (a quorum queue's
    ``x-delivery-count``; RabbitMQ 4.3 moved it to ``x-acquired-count``)."""
    return max(_whole(headers.get("x-delivery-count")), _whole(headers.get("x-acquired-count")))


def _whole(value: Any) -> int:
    if value is None:  # the usual case: a first delivery
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
