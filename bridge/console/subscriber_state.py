"""What a subscriber is doing and why, in one line: the overview card and the subscriber page.
From what the broker says (a :class:`~bridge.console.queues.SubscriberStat`) and, when there
is a ledger, what its delivery records say (a
:class:`~bridge.ledger.figures.SubscriberFigures`). Pure: no I/O.

How each state is known (never guessed from a bare "0 consumers"):

- paused by an operator: the state in ``<name>.control`` says so, with who and when;
- throttled until when: its latest attempt in the ledger is ``throttled`` and the pause it
  recorded (the target's ``Retry-After``, which every worker of it sits out through
  ``<name>.pauses``) has not ended;
- consuming: its queue has consumers; *failing* when the ledger's latest error (in the last
  hour) is newer than its last delivery: since the first failure after that delivery;
- no worker: no process consumes ``<name>.workers`` (every worker does while it runs);
- waiting for a target that is down: workers run, none consumes, not paused, and the
  subscriber forwards over HTTP: the only reason a running forwarder takes nothing is its
  circuit breaker (the target failed again and again; every worker probes it and consumes
  again when it answers). Since when: the first failure after its last delivery, from the
  ledger (without one: the worker's log and ``bridge_forwarder_circuit_open``).
- starting or reconnecting: workers run, none consumes yet, and it has no breaker.

An ordered subscriber holds one message per partition while its target is down (it keeps its
consumers), so it reads as consuming then, and as failing once the ledger has the failures.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.console.queues import SubscriberStat
from bridge.console.views import format_time
from bridge.ledger.figures import Seen, SubscriberFigures


class Kind(enum.StrEnum):
    CONSUMING = "consuming"
    FAILING = "failing"
    THROTTLED = "throttled"
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
        return self.kind in {Kind.TARGET_DOWN, Kind.NO_WORKER, Kind.NOT_DECLARED, Kind.FAILING}


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def state_of(
    stat: SubscriberStat, figures: SubscriberFigures | None = None, now: datetime | None = None
) -> State:
    """The state line of ``stat``'s subscriber, with the ledger's ``figures`` when read."""
    now = now or datetime.now(UTC)
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
    until = figures.throttled_until if figures is not None else None
    if until is not None and figures is not None and figures.last_throttle is not None:
        asked = figures.last_throttle
        status = f" {asked.status}" if asked.status is not None else ""
        return State(
            Kind.THROTTLED,
            f"Throttled until {clock(until, now)}: its target answered{status} with "
            f"Retry-After {asked.retry_after:g} s (every worker waits; no try spent)",
        )
    if consumers:
        if figures is not None and figures.failing and figures.failing_since is not None:
            error = figures.last_error
            fate = "dead-lettered" if error and error.outcome == "dead" else "retried later"
            return State(
                Kind.FAILING,
                f"Consuming, but failing since {clock(figures.failing_since, now)}: "
                f"{_last(error)}, {fate} ({_count(consumers, 'consumer')})",
            )
        return State(Kind.CONSUMING, f"Consuming ({_count(consumers, 'consumer')})")
    workers = stat.workers
    if workers == 0:
        return State(Kind.NO_WORKER, "No worker running: start mintsoft-bridge worker")
    running = f"{_count(workers, 'worker')}" if workers is not None else "its workers"
    if stat.subscriber.forward_url is not None:
        since = ""
        if figures is not None and figures.failing_since is not None:
            since = f" since {clock(figures.failing_since, now)}; {_last(figures.last_error)}"
        return State(
            Kind.TARGET_DOWN,
            f"Waiting for its target, which is down{since}; {running} probing it, "
            "messages wait in its queue",
        )
    return State(Kind.STARTING, f"Not consuming yet ({running} starting or reconnecting)")


def _last(error: Seen | None) -> str:
    """``last answer 500`` or ``last error: cannot connect (...)``: the status, or the
    error without its type and the target's URL (the page shows them in full)."""
    if error is None:
        return "no error recorded"
    if error.status is not None:
        return f"last answer {error.status}"
    text = error.error or error.outcome
    kind, _, rest = text.partition(": ")
    if rest and " " not in kind:  # "TargetDown: http://host/path: cannot connect (...)"
        text = rest
    if text.startswith(("http://", "https://")) and ": " in text:
        text = text.split(": ", 1)[1]
    return f"last error: {text if len(text) <= 60 else text[:59] + '…'}"


def ago(seconds: float) -> str:
    """``40 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``: an age for a card."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def clock(moment: datetime, now: datetime) -> str:
    """``11:02:03 UTC (12 min ago)``, or ``... in 30 s`` ahead; the date too when another
    day than ``now``'s."""
    shown = moment.astimezone(UTC)
    text = (
        shown.strftime("%H:%M:%S")
        if shown.date() == now.astimezone(UTC).date()
        else (format_time(shown))
    )
    seconds = (now - moment).total_seconds()
    relative = f"{ago(seconds)} ago" if seconds >= 0 else f"in {ago(-seconds)}"
    return f"{text} UTC ({relative})"


def _shown(at: str) -> str:
    try:
        return format_time(datetime.fromisoformat(at))
    except ValueError:
        return at
