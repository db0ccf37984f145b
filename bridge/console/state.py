"""The console's shared state: broker link, exchange, subscribers, sign-in (the password or
the named operators, sessions, limits, password checks, who may be believed about https and
client addresses, which host names it answers to) and running jobs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from bridge.amqp.topology import ArchiveRetention
from bridge.console.auth import Sessions
from bridge.console.broker import ConsoleBroker
from bridge.console.jobs import Jobs
from bridge.console.origin import Network, client_address, networks, over_https
from bridge.console.signins import OVERALL, PasswordChecks, SignInLimits
from bridge.console.sources import ArchiveSummaryCache
from bridge.console.users import Users
from bridge.core.settings import SettingsError
from bridge.core.values import url_passwords
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
    """``BRIDGE_CONSOLE_SECURE_COOKIES``: cookies are ``Secure`` whatever the request says."""
    trusted_proxies: tuple[str, ...] = ()
    """``BRIDGE_CONSOLE_TRUSTED_PROXIES``: whose ``X-Forwarded-For``/``-Proto`` is believed."""
    listen_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    """``BRIDGE_CONSOLE_ALLOWED_HOSTS``: host names besides loopback and ``listen_host``."""
    overall_failures: int = OVERALL
    sessions: Sessions = field(default_factory=Sessions)
    jobs: Jobs = field(default_factory=Jobs)
    archive_cache: ArchiveSummaryCache = field(default_factory=ArchiveSummaryCache)
    ledger: LedgerReader | None = None
    """The order lookup's and ``/audit``'s source (``BRIDGE_LEDGER_URL``); ``None``: the
    order lookup scans the archive, ``/audit`` says it cannot list."""
    users: Users | None = None
    """Named operators (``BRIDGE_CONSOLE_USERS_FILE``); ``None``: the shared password."""
    dlq_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    """One read or change of a subscriber's DLQ at a time (see console.dead_letters)."""
    signins: SignInLimits = field(init=False)
    password_checks: PasswordChecks = field(init=False)
    proxies: tuple[Network, ...] = field(init=False)

    broker: ConsoleBroker = field(init=False)
    """The one broker link of every page (opened and closed with the app)."""

    def __post_init__(self) -> None:
        self.broker = ConsoleBroker(self.amqp_urls)
        self.signins = SignInLimits(overall=self.overall_failures)
        self.password_checks = PasswordChecks()
        try:
            self.proxies = networks(self.trusted_proxies)
        except ValueError as exc:
            raise SettingsError(
                f"BRIDGE_CONSOLE_TRUSTED_PROXIES has {str(exc)!r}, not an address or network: "
                "use e.g. 10.0.0.7,10.1.0.0/16"
            ) from None

    def client(self, request: web.BaseRequest) -> str:
        """The address a request comes from (a trusted proxy's word taken)."""
        return client_address(request, self.proxies)

    def secure(self, request: web.BaseRequest) -> bool:
        """Whether this request's cookies are to be ``Secure``."""
        return self.secure_cookies or over_https(request, self.proxies)

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
