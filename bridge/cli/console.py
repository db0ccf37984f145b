"""``console [--config FILE]``: serve the operator pages until SIGTERM or Ctrl-C.
``console --hash-password NAME``: print the ``BRIDGE_CONSOLE_USERS_FILE`` line of operator NAME,
the password read from the terminal (asked twice) or from the first line of stdin, never
from the command line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from bridge.cli.common import Parser, add_command, run_async, settings_of
from bridge.core.settings import Settings, SettingsError

if TYPE_CHECKING:
    from bridge.console.users import Users

READS = (
    "BRIDGE_AMQP_URL",
    "BRIDGE_EXCHANGE",
    "BRIDGE_LOG_FORMAT",
    "BRIDGE_CONSOLE_HOST",
    "BRIDGE_CONSOLE_PORT",
    "BRIDGE_CONSOLE_PASSWORD",
    "BRIDGE_CONSOLE_USERS_FILE",
    "BRIDGE_CONSOLE_SECURE_COOKIES",
    "BRIDGE_CONSOLE_TRUSTED_PROXIES",
    "BRIDGE_CONSOLE_ALLOWED_HOSTS",
    "BRIDGE_CONSOLE_ALLOW_PLACEHOLDER_PASSWORD",
    "BRIDGE_LEDGER_URL",
    "BRIDGE_ARCHIVE",
    "BRIDGE_ARCHIVE_MAX_AGE",
    "BRIDGE_ARCHIVE_MAX_BYTES",
    "BRIDGE_SYNC_STATE_PATH",
)
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands,
        "console",
        run,
        READS,
        help="serve the operator console (overview, orders, dead letters, replay)",
    )
    sub.add_argument(
        "--config", metavar="FILE", default=None, help="subscribers file (the workers' one)"
    )
    sub.add_argument(
        "--hash-password",
        metavar="NAME",
        default=None,
        help="print operator NAME's line for BRIDGE_CONSOLE_USERS_FILE (the password is asked "
        "on the terminal, or read from stdin) and exit",
    )


def run(args: argparse.Namespace) -> int:
    import secrets

    from bridge.console.auth import require_password_off_loopback
    from bridge.console.serve import run_console
    from bridge.core import logs
    from bridge.worker.subscribers import load_subscribers

    if args.hash_password is not None:
        return hash_password_line(args.hash_password)
    settings = settings_of(args)
    logs.configure(settings.log_format)
    users = _users(settings)
    if users is None:
        require_password_off_loopback(
            settings.console_host,
            settings.console_password,
            settings.console_allow_placeholder_password,
        )
    subscribers = load_subscribers(args.config) if args.config else []
    password = settings.console_password
    if users is not None:
        # Operators sign in by name; the shared password signs no one in (a random one
        # stands in for it, never shown).
        password = secrets.token_urlsafe(32)
    elif not password:
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

    run_async(run_console(settings, subscribers, password, ready, users))
    return 0


def _users(settings: Settings) -> Users | None:
    """The named operators, checked (off loopback: none with a placeholder password)."""
    import logging

    from bridge.console.auth import is_loopback
    from bridge.console.users import load_users, placeholder_users

    if not settings.console_users_file:
        return None
    users = load_users(settings.console_users_file)
    if not is_loopback(settings.console_host) and not settings.console_allow_placeholder_password:
        weak = placeholder_users(users)
        if weak:
            raise SettingsError(
                f"BRIDGE_CONSOLE_USERS_FILE={users.path}: {', '.join(weak)} "
                f"{'has' if len(weak) == 1 else 'have'} a well-known placeholder password and "
                f"BRIDGE_CONSOLE_HOST={settings.console_host} is reachable from other machines: "
                "make their lines again with `mintsoft-bridge console --hash-password NAME`"
            )
    if settings.console_password:
        logging.getLogger("bridge.console").warning(
            "BRIDGE_CONSOLE_PASSWORD is not used: BRIDGE_CONSOLE_USERS_FILE is set, so "
            "operators sign in by name (%s)",
            ", ".join(users.names),
        )
    return users


def hash_password_line(name: str) -> int:
    """Print operator ``name``'s users-file line; the password from the terminal (asked
    twice) or the first line of stdin."""
    import getpass

    from bridge.console.users import check_name, user_line

    check_name(name)
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("The same again: ") != password:
            raise SettingsError("the two passwords differ: run it again")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    print(user_line(name, password))
    return 0
