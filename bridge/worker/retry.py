"""Where a failed message goes next, as data.

A delivery is tried ``in_process_tries`` times with a short jittered backoff
(:meth:`Ladder.backoff`). If it still fails, :meth:`Ladder.after_failure` says where it goes:
the next ``<name>.retry.<i>`` queue (whose TTL dead-letters it back to ``<name>``) with
``x-attempt`` one higher, or, after the last step or on
:class:`~bridge.errors.PermanentError`, ``<name>.dlq``. An ordered subscriber's ladder
(``in_place``) waits its delays holding the message instead of moving it. The loop that
follows the ladder is :meth:`bridge.worker.handling.Handling._tries`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bridge.amqp.topology import dlq_name, retry_queue_name

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 2.0
REDELIVERY_LIMIT = 20
"""A message the broker has redelivered this many times (a quorum queue's
``x-delivery-count``) never got an answer: workers crashed or lost the broker while
handling it. It goes to the DLQ untried instead of crashing the next worker too."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Publish a copy to ``queue`` (a TTL step of the ladder) carrying ``x-attempt``."""

    queue: str
    attempt: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class WaitInPlace:
    """Wait ``delay_ms`` holding the message, then try it again as delivery ``attempt``."""

    attempt: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Publish a copy to the subscriber's dead-letter queue."""

    queue: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Ladder:
    """A subscriber's retry policy: in-process tries per delivery, then the delayed steps."""

    subscriber: str
    delays_ms: tuple[int, ...]
    in_process_tries: int = 3
    redelivery_limit: int = REDELIVERY_LIMIT
    in_place: bool = False
    """An ordered subscriber's: the delays are waited holding the message (no retry queues)."""

    def after_failure(
        self, delivery: int, permanent: bool = False
    ) -> Retry | WaitInPlace | DeadLetter:
        """Where a message goes when its ``delivery``-th delivery (1-based) failed."""
        step = delivery - 1
        if permanent or step >= len(self.delays_ms):
            return DeadLetter(dlq_name(self.subscriber), delivery)
        if self.in_place:
            return WaitInPlace(delivery + 1, self.delays_ms[step])
        return Retry(retry_queue_name(self.subscriber, step), delivery + 1, self.delays_ms[step])

    def crash_loop(self, delivery_count: int) -> bool:
        """Whether a message redelivered ``delivery_count`` times is to be given up on."""
        return delivery_count >= self.redelivery_limit

    def handler_attempt(self, delivery: int, try_number: int) -> int:
        """The ``attempt`` a handler sees: every call counted, across deliveries."""
        return (delivery - 1) * self.in_process_tries + try_number

    def backoff(self, tries: int) -> float:
        """Seconds to wait after the ``tries``-th failed try of a delivery: 0.1 s, 0.2 s,
        0.4 s ... at most 2 s, plus up to 0.1 s of jitter. The only retry schedule."""
        exponential: float = min(BACKOFF_INITIAL * 2.0 ** (tries - 1), BACKOFF_MAX)
        return exponential + random.uniform(0, BACKOFF_INITIAL)
