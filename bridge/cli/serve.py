"""``serve``: run the webhook receiver."""

from __future__ import annotations

import argparse

from bridge.cli.common import Parser, run_async, settings_flags, settings_of

READS = (
    "BRIDGE_AMQP_URL",
    "BRIDGE_HOST",
    "BRIDGE_PORT",
    "BRIDGE_API_KEYS",
    "BRIDGE_AUTH_HEADERS",
    "BRIDGE_ALLOW_UNAUTHENTICATED",
    "BRIDGE_EXCHANGE",
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
    settings = settings_flags(READS)
    help = "run the webhook receiver (POST /webhooks/<event>)"
    sub = commands.add_parser("serve", help=help, description=help, parents=[settings])
    sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bridge.core import logs
    from bridge.receiving.serve import serve

    settings = settings_of(args)
    settings.require_auth_or_opt_out()
    logs.configure(settings.log_format)
    run_async(serve(settings))
    return 0
