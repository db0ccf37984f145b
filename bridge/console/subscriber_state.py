"""What a subscriber is doing, in one line, from what the broker says (a
:class:`~bridge.console.queues.SubscriberStat`): the overview card and the subscriber page.

How each state is known (never guessed from a bare "0 consumers"):

- paused by an operator: the state in ``<name>.control`` says so, with who and when;
- consuming: its queue has consumers;
- no worker: no process consumes ``<name>.workers`` (every worker does while it runs);
- waiting for a target that is down: workers run, none consumes, not paused, and the
  subscriber forwards over HTTP: the only reason a running forwarder takes nothing is its
  circuit breaker (the target failed again and again; the worker probes it and consumes again
  when it answers). Since when is in the worker's log and ``bridge_forwarder_circuit_open``.
- starting or reconnecting: workers run, none consumes yet, and it has no breaker.

An ordered subscriber holds one message per partition while its target is down (it keeps its
consumers), so it reads as consuming then.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from bridge.console.queues import SubscriberStat
from bridge.console.views import format_time


class Kind(enum.StrEnum):
    CONSUMING = "consuming"
    PAUSED = "paused"
    TARGET_DOWN = "target-down"
    NO_WORKER = "no-worker"
    STARTING = "starting"
    NOT_DECLARED = "not-declared"


@dataclass(frozen=True)
class State:
    kind: Kind
    text: str

    @property
    def bad(self) -> bool:
        return self.kind in {Kind.TARGET_DOWN, Kind.NO_WORKER, Kind.NOT_DECLARED}


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def state_of(stat: SubscriberStat) -> State:
    consumers = stat.main.consumers
    if stat.main.ready is None or consumers is None:
        return State(
            Kind.NOT_DECLARED, "Queue not declared yet: start its worker or run topology --config"
        )
    control = stat.control
    if control is not None and control.paused:
        since = f" since {_shown(control.at)} UTC" if control.at else ""
        text = f"Paused by {control.operator or 'an operator'}{since}"
        if consumers:
            text += f" (stopping: {_count(consumers, 'consumer')} finishing)"
        return State(Kind.PAUSED, text)
    if consumers:
        return State(Kind.CONSUMING, f"Consuming ({_count(consumers, 'consumer')})")
    workers = stat.workers
    if workers == 0:
        return State(Kind.NO_WORKER, "No worker running: start mintsoft-bridge worker")
    running = f"{_count(workers, 'worker')}" if workers is not None else "its workers"
    if stat.subscriber.forward_url is not None:
        return State(
            Kind.TARGET_DOWN,
            f"Waiting for its target, which is down ({running} probing; messages wait)",
        )
    return State(Kind.STARTING, f"Not consuming yet ({running} starting or reconnecting)")


def _shown(at: str) -> str:
    try:
        return format_time(datetime.fromisoformat(at))
    except ValueError:
        return at
