"""Long changes (an archive replay) run as background jobs whose progress a page polls.

A job belongs to the console process, not to the page that started it: closing the page
changes nothing, and the replay's own guarantees (each copy confirmed) hold whatever
happens. Jobs are kept in memory (the last ``KEEP`` of them); stopping the console cancels
those still running, which loses nothing already confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("bridge.console")
KEEP = 50


@dataclass
class Job:
    id: str
    title: str
    done: int = 0
    total: int | None = None
    finished: bool = False
    error: str | None = None
    result: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def progress(self, done: int, total: int | None) -> None:
        self.done = done
        if total is not None:
            self.total = total

    @property
    def percent(self) -> int:
        if self.finished and self.error is None:
            return 100
        if not self.total:
            return 0
        return min(100, self.done * 100 // self.total)


Work = Callable[[Job], Awaitable[str]]


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def start(self, title: str, work: Work) -> Job:
        job = Job(secrets.token_hex(8), title)
        self._jobs[job.id] = job
        while len(self._jobs) > KEEP:
            oldest = next(iter(self._jobs))
            if not self._jobs[oldest].finished:
                break
            del self._jobs[oldest]
        job.task = asyncio.create_task(self._run(job, work))
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def _run(self, job: Job, work: Work) -> None:
        try:
            job.result = await work(job)
        except asyncio.CancelledError:
            job.error = "stopped with the console (what was confirmed stays sent)"
            raise
        except Exception as exc:
            job.error = str(exc) or type(exc).__name__
            log.warning("console: job %s failed: %s", job.title, job.error)
        finally:
            job.finished = True

    async def stop(self) -> None:
        tasks = [job.task for job in self._jobs.values() if job.task and not job.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
