"""``console [--config FILE]``: serve the operator pages until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from bridge.cli.common import Parser, run_async, settings_flags, settings_of
from bridge.core.settings import SettingsError

READS = (
    "BRIDGE_AMQP_URL",
    "BRIDGE_EXCHANGE",
    "BRIDGE_LOG_FORMAT",
    "BRIDGE_CONSOLE_HOST",
    "BRIDGE_CONSOLE_PORT",
    "BRIDGE_CONSOLE_PASSWORD",
    "BRIDGE_CONSOLE_SECURE_COOKIES",
    "BRIDGE_CONSOLE_TRUSTED_PROXIES",
    "BRIDGE_CONSOLE_ALLOWED_HOSTS",
    "BRIDGE_CONSOLE_ALLOW_PLACEHOLDER_PASSWORD",
    "BRIDGE_ARCHIVE",
    "BRIDGE_ARCHIVE_MAX_AGE",
    "BRIDGE_ARCHIVE_MAX_BYTES",
    "BRIDGE_SYNC_STATE_PATH",
)
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    settings = settings_flags(READS)
    help = "serve the operator console (overview, orders, dead letters, replay)"
    sub = commands.add_parser("console", help=help, description=help, parents=[settings])
    sub.set_defaults(func=run)
    sub.add_argument(
        "--config", metavar="FILE", default=None, help="subscribers file (the workers' one)"
    )


def run(args: argparse.Namespace) -> int:
    import secrets

    from bridge.console.auth import require_password_off_loopback
    from bridge.console.serve import run_console
    from bridge.core import logs
    from bridge.worker.subscribers import load_subscribers

    settings = settings_of(args)
    logs.configure(settings.log_format)
    require_password_off_loopback(
        settings.console_host,
        settings.console_password,
        settings.console_allow_placeholder_password,
    )
    subscribers = load_subscribers(args.config) if args.config else []
    password = settings.console_password
    if not password:
        # Loopback only (checked above): a password for this run, shown on this terminal
        # once; never written where logs are kept (a service's stderr is its journal).
        if not sys.stderr.isatty():
            raise SettingsError(
                "BRIDGE_CONSOLE_PASSWORD is unset and there is no terminal to show a "
                "password made for this run: set BRIDGE_CONSOLE_PASSWORD (or its _FILE form)"
            )
        password = secrets.token_urlsafe(12)
        print(
            f"console password for this run: {password} "
            "(set BRIDGE_CONSOLE_PASSWORD to choose one)",
            file=sys.stderr,
        )

    def ready(url: str) -> None:
        print(f"console on {url}", file=sys.stderr, flush=True)

    run_async(run_console(settings, subscribers, password, ready))
    return 0
