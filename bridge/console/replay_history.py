"""The replays ``/replay`` lists: what this console runs now, from its memory
(:class:`~bridge.console.jobs.Jobs`), and every archive replay before, from the ledger's audit
records (console and command line alike; they outlast a console restart).

With a ledger, the memory adds only what the ledger cannot hold yet: the replays running
here, and those finished here after the indexer's mark (their audit record not indexed yet),
so a replay never drops out of the list between the two. A ledger that did not answer is a
could-not-look reason beside every replay this console remembers, never an empty history.
Without one (``BRIDGE_LEDGER_URL`` empty), the memory's last
:data:`~bridge.console.jobs.KEEP` replays are all there is, and the page says a restart
forgets them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.console.jobs import Job
from bridge.console.looked import Looked
from bridge.console.replay_plan import Plan
from bridge.console.sources import ledger_changes
from bridge.console.state import Console
from bridge.core.audit import Action
from bridge.ledger.audits import Changes


@dataclass(frozen=True)
class ReplayHistory:
    jobs: list[Job]
    """This console's replays to show from memory, newest first."""
    ledger: Looked[Changes] | None
    """The ledger's archive replays; ``None``: there is no ledger."""


async def replay_history(console: Console) -> ReplayHistory:
    """What ``/replay`` lists under "Replays"."""
    jobs = [job for job in console.jobs.listed() if isinstance(job.plan, Plan)]
    ledger = await ledger_changes(console.ledger, Action.ARCHIVE_REPLAY, console.exchange)
    if ledger is not None and ledger.rows is not None:
        mark = ledger.rows.current_at
        jobs = [
            job
            for job in jobs
            if job.finished_at is None or mark is None or job.finished_at >= mark
        ]
    return ReplayHistory(jobs, ledger)
