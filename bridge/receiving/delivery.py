"""Where an accepted webhook goes: the broker with a confirm, else the durable spool.

``keep`` answers ``"accepted"`` once the broker confirmed, ``"spooled"`` once the message is
committed and fsynced in the spool, and raises :class:`Unavailable` (503) when neither could
keep it. It goes straight to the spool, without waiting for a publish timeout, while the
broker link is known to be down, and while the spool holds anything: new webhooks queue
behind the spooled ones so the drain keeps arrival order.

Every publish failure goes to the spool, a ``basic.return`` (unroutable) included: the
message went nowhere, so it is not confirmed, but it is not lost either; the drain
re-declares the topology and publishes it again until it is routed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bridge.amqp.publisher import Publisher, PublishFailed
from bridge.core.contract import Envelope
from bridge.receiving.drain import Drainer, Repair
from bridge.receiving.spool import Spool, SpoolError, SpoolFull

log = logging.getLogger("bridge.receiving.delivery")

SPOOL_WRITE_TIMEOUT = 30.0
"""Seconds a request waits for its spool commit (normally milliseconds) before a 503."""


class Unavailable(Exception):
    """Neither the broker nor the spool could keep the message: answer 503."""


class Delivery:
    """Keeps a webhook: returns ``"accepted"`` or ``"spooled"``, or raises :class:`Unavailable`."""

    def __init__(
        self, publisher: Publisher, spool: Spool | None = None, repair: Repair | None = None
    ) -> None:
        self.publisher = publisher
        self.spool = spool
        self.drainer = Drainer(spool, publisher, repair) if spool is not None else None
        self._warned_at = 0.0

    async def open(self) -> None:
        """Open the spool and start draining what it holds (the broker link is started by
        the caller)."""
        if self.spool is not None and self.drainer is not None:
            await self.spool.open()
            self.drainer.start()

    async def close(self) -> None:
        """Stop draining and close the spool; whatever is left is drained on next start."""
        if self.spool is not None and self.drainer is not None:
            await self.drainer.stop()
            await self.spool.close()

    async def keep(self, envelope: Envelope) -> str:
        spool = self.spool
        if spool is None:
            try:
                await self.publisher.publish(envelope)
            except PublishFailed as exc:
                self._warn(envelope, exc, "answering 503")
                raise Unavailable(exc.reason) from None
            return "accepted"
        if spool.depth == 0 and self.publisher.connected:
            try:
                await self.publisher.publish(envelope)
            except PublishFailed as exc:
                self._warn(envelope, exc, "spooling it")
            else:
                return "accepted"
        try:
            async with asyncio.timeout(SPOOL_WRITE_TIMEOUT):
                await spool.append(envelope)
        except TimeoutError:
            # A stalled disk: say so rather than hold the request. The write may still
            # land and be published later, which is a duplicate at worst, never a loss.
            raise Unavailable("the spool did not commit in time") from None
        except SpoolFull as exc:
            raise Unavailable(str(exc)) from None
        except SpoolError as exc:
            raise Unavailable(str(exc)) from None
        return "spooled"

    def _warn(self, envelope: Envelope, exc: PublishFailed, then: str) -> None:
        # Once a second at most: an outage under load must not flood the log.
        now = time.monotonic()
        if now - self._warned_at < 1.0:
            return
        self._warned_at = now
        log.warning(
            "publish of %s failed (%s); %s",
            envelope.message_id,
            exc,
            then,
            extra={"message_id": envelope.message_id},
        )

    @property
    def ready(self) -> bool:
        """Whether a webhook would be taken now: broker connected, or spool has room."""
        connected = self.publisher.connected
        if self.spool is None:
            return connected
        return self.spool.has_room or (connected and self.spool.depth == 0)

    def status(self) -> dict[str, object]:
        """Broker state and spool figures, for ``/readyz``."""
        spool = self.spool
        if spool is None:
            return {"broker": self.publisher.link.state, "spool": "disabled", "spool_depth": 0}
        return {
            "broker": self.publisher.link.state,
            "spool": "ok" if spool.has_room else "full",
            "spool_depth": spool.depth,
            "spool_bytes": spool.bytes,
            "spool_max_bytes": spool.max_bytes,
            "spool_oldest_age_seconds": round(spool.oldest_age(), 3),
        }
