"""The console's shared state: broker, exchange, subscribers, sign-in and running jobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from bridge.amqp.topology import ArchiveRetention
from bridge.console.auth import Sessions
from bridge.console.jobs import Jobs
from bridge.console.sources import ArchiveSummaryCache
from bridge.core.values import url_passwords
from bridge.worker.subscribers import Subscriber


@dataclass
class Console:
    """What every page reads: broker, exchange, subscribers, sign-in and running jobs."""

    amqp_urls: tuple[str, ...]
    exchange: str
    subscribers: list[Subscriber]
    password: str
    sync_state_path: str | None = None
    archive_retention: ArchiveRetention | None = None
    secure_cookies: bool = False
    sessions: Sessions = field(default_factory=Sessions)
    jobs: Jobs = field(default_factory=Jobs)
    archive_cache: ArchiveSummaryCache = field(default_factory=ArchiveSummaryCache)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What pages mask: the sign-in password, the broker's passwords and every value of
        the subscribers' ``forward_headers`` (a target's error may echo one)."""
        found = [self.password, *(p for url in self.amqp_urls for p in url_passwords(url))]
        for sub in self.subscribers:
            found += [value for _, value in sub.forward_headers]
            found += url_passwords(sub.forward_url or "")
        return tuple(s for s in found if s)

    def subscriber(self, name: str) -> Subscriber:
        for sub in self.subscribers:
            if sub.name == name:
                return sub
        raise web.HTTPNotFound(text=f"No subscriber {name!r} in the subscribers file.")


CONSOLE = web.AppKey("console", Console)


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]
