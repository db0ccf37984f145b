"""Where an accepted webhook goes: the broker, with a confirm. (The spool is the fallback
when the broker cannot confirm in time.)"""

from __future__ import annotations

import logging

from bridge.envelope import Envelope
from bridge.publisher import Publisher, PublishFailed

log = logging.getLogger("bridge.delivery")


class Unavailable(Exception):
    """Neither the broker nor the spool could keep the message: answer 503."""


class Delivery:
    """Keeps a webhook: returns ``"accepted"`` once confirmed, or raises :class:`Unavailable`."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def keep(self, envelope: Envelope) -> str:
        try:
            await self.publisher.publish(envelope)
        except PublishFailed as exc:
            log.warning(
                "publish of %s failed (%s); answering 503",
                envelope.message_id,
                exc,
                extra={"message_id": envelope.message_id},
            )
            raise Unavailable(exc.reason) from None
        return "accepted"

    @property
    def ready(self) -> bool:
        """Whether a webhook would be taken now."""
        return self.publisher.connected

    def status(self) -> dict[str, object]:
        return {"broker": self.publisher.link.state}
