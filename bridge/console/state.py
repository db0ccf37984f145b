"""The console's shared state: broker link, exchange, subscribers, sign-in and running jobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from bridge.amqp.topology import ArchiveRetention
from bridge.console.auth import Sessions
from bridge.console.broker import ConsoleBroker
from bridge.console.jobs import Jobs
from bridge.console.sources import ArchiveSummaryCache
from bridge.ledger.queries import LedgerReader
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
    ledger: LedgerReader | None = None
    """The order lookup's source (``BRIDGE_LEDGER_URL``); ``None``: it scans the archive."""
    broker: ConsoleBroker = field(init=False)
    """The one broker link of every page (opened and closed with the app)."""

    def __post_init__(self) -> None:
        self.broker = ConsoleBroker(self.amqp_urls)

    def subscriber(self, name: str) -> Subscriber:
        for sub in self.subscribers:
            if sub.name == name:
                return sub
        raise web.HTTPNotFound(text=f"No subscriber {name!r} in the subscribers file.")


CONSOLE = web.AppKey("console", Console)


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]
