"""Long changes (an archive replay) run as background jobs whose progress a page polls.

A job belongs to the console process, not to the page that started it: closing the page
changes nothing, and the replay's own guarantees (each copy confirmed) hold whatever
happens. A job may have a key (the subscriber a replay goes to): while one with that key
runs, starting another raises :class:`Running`. An operator can cancel a running job.
Each job keeps who started it and when, when it finished, what it does (``plan``: a replay's
:class:`~bridge.console.replay_plan.Plan`) and its outcome, for the history list
(:meth:`Jobs.listed`). Jobs are kept in memory, at most ``KEEP``: the oldest finished ones go
first, then (should that not be enough) the oldest running ones are cancelled and go too; a
console restart forgets them all (with a ledger, ``/replay`` lists finished replays from its
audit records: :mod:`bridge.console.replay_history`). Stopping the console cancels those
still running; cancelling loses nothing already confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("bridge.console")
KEEP = 50


@dataclass
class Job:
    id: str
    title: str
    done: int = 0
    total: int | None = None
    key: str | None = None
    finished: bool = False
    cancelled: bool = False
    error: str | None = None
    result: str | None = None
    started_by: str | None = None
    plan: Any = None
    """What the job does, for its page and the history (a replay's Plan)."""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def progress(self, done: int, total: int | None) -> None:
        self.done = done
        if total is not None:
            self.total = total

    @property
    def outcome(self) -> str:
        """``running``, ``done``, ``cancelled`` (by an operator, or evicted) or ``failed``."""
        if not self.finished:
            return "running"
        if self.cancelled:
            return "cancelled"
        return "failed" if self.error is not None else "done"

    @property
    def percent(self) -> int:
        if self.finished and self.error is None:
            return 100
        if not self.total:
            return 0
        return min(100, self.done * 100 // self.total)


Work = Callable[[Job], Awaitable[str]]


class Running(Exception):
    """A job with the same key is still running."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"{job.title} is running (job {job.id})")
        self.job = job


class Jobs:
    def __init__(self, keep: int = KEEP) -> None:
        self._jobs: dict[str, Job] = {}
        self.keep = keep

    def start(
        self,
        title: str,
        work: Work,
        key: str | None = None,
        *,
        started_by: str | None = None,
        plan: Any = None,
    ) -> Job:
        """Run ``work`` as a job; :class:`Running` if a job with ``key`` still runs."""
        if key is not None:
            running = self.running(key)
            if running is not None:
                raise Running(running)
        job = Job(secrets.token_hex(8), title, key=key, started_by=started_by, plan=plan)
        self._jobs[job.id] = job
        self._evict()
        job.task = asyncio.create_task(self._run(job, work))
        job.task.add_done_callback(functools.partial(self._settled, job))
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def listed(self) -> list[Job]:
        """Every job kept, newest first."""
        return list(reversed(self._jobs.values()))  # kept in the order they started

    def running(self, key: str) -> Job | None:
        return next((j for j in self._jobs.values() if j.key == key and not j.finished), None)

    def cancel(self, job_id: str) -> Job | None:
        """Stop job ``job_id`` if it still runs (what it already did stays done)."""
        job = self._jobs.get(job_id)
        if job is not None and not job.finished and job.task is not None:
            job.cancelled = True
            job.task.cancel()
        return job

    def _evict(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.finished]
        while len(self._jobs) > self.keep and finished:
            del self._jobs[finished.pop(0)]
        while len(self._jobs) > self.keep:
            oldest = self._jobs.pop(next(iter(self._jobs)))
            if oldest.task is not None:
                oldest.cancelled = True
                oldest.task.cancel()

    async def _run(self, job: Job, work: Work) -> None:
        try:
            job.result = await work(job)
        except Exception as exc:
            job.error = str(exc) or type(exc).__name__
            log.warning("console: job %s failed: %s", job.title, job.error)

    @staticmethod
    def _settled(job: Job, task: asyncio.Task[None]) -> None:
        # A done callback, not a finally: a task cancelled before it ever ran never enters
        # its coroutine, and must still count as finished.
        if task.cancelled():
            job.error = (
                "stopped by an operator" if job.cancelled else "stopped with the console"
            ) + " (what was confirmed stays sent)"
        job.finished = True
        job.finished_at = datetime.now(UTC)

    async def stop(self) -> None:
        tasks = [job.task for job in self._jobs.values() if job.task and not job.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
