"""Where one webhook stands with one subscriber, from the attempts the ledger holds: the five
states of contract section 10. Pure: no I/O.

The latest attempt decides (by time, then by its place in the deliveries stream):
``delivered``; ``dead`` (moved to the DLQ, or discarded from it by an operator); ``retrying``
(failed or throttled and to be tried again, or replayed out of the DLQ or the archive). With
no attempt, ``waiting`` if the subscriber takes the webhook, ``not for it`` if its events or
its client / warehouse filters leave it out.
"""

from __future__ import annotations

from enum import StrEnum

from bridge.core.records import Outcome


class State(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"
    WAITING = "waiting"
    NOT_FOR_IT = "not for it"


_AFTER: dict[str, State] = {
    Outcome.DELIVERED: State.DELIVERED,
    Outcome.DEAD: State.DEAD,
    Outcome.DISCARDED: State.DEAD,
    Outcome.FAILED: State.RETRYING,
    Outcome.THROTTLED: State.RETRYING,
    Outcome.REPLAYED: State.RETRYING,
}

SETTLED_OUTCOMES = (Outcome.DELIVERED, Outcome.DEAD, Outcome.DISCARDED)
"""Outcomes after which a webhook no longer waits for its subscriber (no more attempts
come unless an operator replays it)."""


def state_of(last_outcome: str | None, *, for_it: bool) -> State:
    """The state after the latest attempt's outcome (``None``: no attempt yet)."""
    if last_outcome is None:
        return State.WAITING if for_it else State.NOT_FOR_IT
    return _AFTER.get(last_outcome, State.RETRYING)
