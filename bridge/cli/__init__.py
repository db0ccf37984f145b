"""The command line: argument parsing, printing and exit codes, one module per command.

Only this package imports argparse or prints; the commands call domain code, which returns
data or raises :class:`~bridge.core.settings.SettingsError` (a bad setting or argument:
one line, exit 2) or :class:`~bridge.errors.CommandError` (the job could not be done: one
line, exit 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bridge.cli import (
    archive,
    connect_actions,
    console,
    dlq,
    doctor,
    ledger,
    serve,
    simulate,
    spool,
    sync,
    topology,
    trace,
    worker,
)
from bridge.cli.common import EXIT_USAGE, Parser, UsageError, settings_flags
from bridge.core.settings import SettingsError
from bridge.errors import CommandError

COMMANDS = (
    serve,
    worker,
    topology,
    dlq,
    spool,
    connect_actions,
    simulate,
    doctor,
    archive,
    sync,
    console,
    ledger,
    trace,
)
"""Each module's ``register`` adds its command, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mintsoft-bridge",
        description="Receive Mintsoft order webhooks into RabbitMQ and deliver them to "
        "internal services, losing none.",
        epilog="Settings come from BRIDGE_* environment variables (or <VARIABLE>_FILE); "
        "a flag of the same name wins. See README.md.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    # Every non-secret setting as a flag, for a command that does not pick the settings it
    # reads; the commands here build their own parent with settings_flags(READS).
    settings = settings_flags()
    for command in COMMANDS:
        command.register(commands, settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mintsoft-bridge`` and ``python -m bridge``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (SettingsError, UsageError) as exc:
        print(f"mintsoft-bridge {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"mintsoft-bridge {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
