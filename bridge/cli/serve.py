"""``serve``: run the webhook receiver."""

from __future__ import annotations

import argparse

from bridge.cli.common import Parser, run_async, settings_of


def register(commands: argparse._SubParsersAction[Parser], settings: Parser) -> None:
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
