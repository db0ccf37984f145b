"""Running the console process: build its state from the settings, serve it, stop cleanly on
SIGTERM or SIGINT (whatever a replay already confirmed stays sent)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridge.amqp.topology import archive_retention
from bridge.console.app import serve_console
from bridge.console.state import Console
from bridge.console.users import Users
from bridge.core.settings import Settings
from bridge.core.tasks import stop_on_signals
from bridge.ledger.queries import LedgerReader
from bridge.worker.subscribers import Subscriber


def console_state(
    settings: Settings,
    subscribers: Sequence[Subscriber],
    password: str,
    users: Users | None = None,
) -> Console:
    return Console(
        amqp_urls=settings.amqp_urls,
        exchange=settings.exchange,
        subscribers=list(subscribers),
        password=password,
        # The sync's settings arrive with the sync; until then its default path.
        sync_state_path=settings.sync_state_path,
        archive_retention=archive_retention(settings),
        ledger=LedgerReader(settings.ledger_url) if settings.ledger_url else None,
        secure_cookies=settings.console_secure_cookies,
        trusted_proxies=settings.console_trusted_proxies,
        listen_host=settings.console_host,
        allowed_hosts=settings.console_allowed_hosts,
        users=users,
    )


async def run_console(
    settings: Settings,
    subscribers: Sequence[Subscriber],
    password: str,
    ready: Callable[[str], None],
    users: Users | None = None,
) -> None:
    console = console_state(settings, subscribers, password, users)
    with stop_on_signals() as stop:
        await serve_console(console, settings.console_host, settings.console_port, stop, ready)
