"""What one subscriber takes, applied to archived webhooks: a replay copies only those.

A subscriber's queue gets a webhook when its event is one the subscriber names (``*`` is the
four order events, ``asn-booked-in`` only by name) and, with ``clients`` / ``warehouses``,
when its ``x-client-id`` / ``x-warehouse-id`` header is one of them (both when both are set;
a webhook without the header matches none): the bindings of
:func:`bridge.amqp.topology.subscriber_topology`, decided here on the archived headers. A
quarantined (non-JSON) body reaches no subscriber, so none takes it.

Pure: :meth:`Audience.left_out` says why a webhook is not taken (``None``: taken), which the
console's dry run counts and shows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bridge.archive.reader import ArchivedWebhook, header_text
from bridge.core.contract import HEADER_CLIENT_ID, HEADER_WAREHOUSE_ID, subscribed_events


class Reason(enum.StrEnum):
    """Why a subscriber does not take a webhook."""

    EVENT = "event"
    CLIENT = "client"
    WAREHOUSE = "warehouse"
    NOT_JSON = "not JSON"


@dataclass(frozen=True)
class Audience:
    """The events (as written in the subscribers file) and Mintsoft client / warehouse ids
    one subscriber takes; empty ``clients`` / ``warehouses``: every one."""

    events: tuple[str, ...]
    clients: tuple[str, ...] = ()
    warehouses: tuple[str, ...] = ()

    @property
    def wanted(self) -> tuple[str, ...]:
        """Its events spelled out (``*`` as the four order events)."""
        return subscribed_events(self.events)

    def left_out(self, webhook: ArchivedWebhook) -> Reason | None:
        """Why this subscriber would not get ``webhook`` from the exchange; ``None``: it would."""
        if webhook.quarantined:
            return Reason.NOT_JSON
        if webhook.event not in self.wanted:
            return Reason.EVENT
        if self.clients and header_text(webhook.headers.get(HEADER_CLIENT_ID)) not in self.clients:
            return Reason.CLIENT
        warehouse = header_text(webhook.headers.get(HEADER_WAREHOUSE_ID))
        if self.warehouses and warehouse not in self.warehouses:
            return Reason.WAREHOUSE
        return None
