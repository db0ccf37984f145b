"""``serve``: run the webhook receiver."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from bridge.cli.common import EXIT_USAGE, Parser, add_command, positive_int, run_async, settings_of
from bridge.core.settings import SettingsError

if TYPE_CHECKING:
    from bridge.core.settings import Settings

READS = (
    "BRIDGE_AMQP_URL",
    "BRIDGE_HOST",
    "BRIDGE_PORT",
    "BRIDGE_API_KEYS",
    "BRIDGE_AUTH_HEADERS",
    "BRIDGE_ALLOW_UNAUTHENTICATED",
    "BRIDGE_EXCHANGE",
    "BRIDGE_ARCHIVE",
    "BRIDGE_ARCHIVE_MAX_AGE",
    "BRIDGE_ARCHIVE_MAX_BYTES",
    "BRIDGE_MAX_BODY_BYTES",
    "BRIDGE_PUBLISH_TIMEOUT",
    "BRIDGE_SPOOL_PATH",
    "BRIDGE_SPOOL_MAX_BYTES",
    "BRIDGE_LOG_FORMAT",
    "BRIDGE_METRICS_HOST",
    "BRIDGE_METRICS_PORT",
)
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands, "serve", run, READS, help="run the webhook receiver (POST /webhooks/<event>)"
    )
    sub.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="N processes answering on one port (SO_REUSEPORT), each with its own broker "
        "link, spool (BRIDGE_SPOOL_PATH with -1, -2, ... before its suffix) and metrics port "
        "(BRIDGE_METRICS_PORT plus 0, 1, ...; set it when N > 1); default 1",
    )


def run(args: argparse.Namespace) -> int:
    from bridge.core import logs
    from bridge.receiving.serve import serve

    settings = settings_of(args)
    settings.require_auth_or_opt_out()
    logs.configure(settings.log_format)
    if args.workers == 1:
        run_async(serve(settings))
        return 0
    from bridge.receiving.workers import run_workers

    return run_workers(settings, args.workers, _worker)


def _worker(settings: Settings) -> int:
    """One worker of ``serve --workers N``: its exit code, as ``main`` would pick it."""
    from bridge.receiving.serve import serve

    try:
        run_async(serve(settings, reuse_port=True))
    except SettingsError as exc:
        print(f"mintsoft-bridge serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
