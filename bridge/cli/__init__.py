"""The command line: argument parsing, printing and exit codes, one module per command.

Only this package imports argparse or prints; the commands call domain code, which returns
data or raises :class:`~bridge.core.settings.SettingsError` (a bad setting or argument:
one line, exit 2) or :class:`~bridge.errors.CommandError` (the job could not be done: one
line, exit 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import import_module
from types import ModuleType

from bridge.cli.common import EXIT_USAGE, Parser, UsageError, settings_flags
from bridge.core.settings import SettingsError
from bridge.errors import CommandError

COMMANDS: dict[str, str] = {
    "serve": "bridge.cli.serve",
    "worker": "bridge.cli.worker",
    "topology": "bridge.cli.topology",
    "dlq": "bridge.cli.dlq",
    "spool": "bridge.cli.spool",
    "connect-actions": "bridge.cli.connect_actions",
    "simulate": "bridge.cli.simulate",
    "doctor": "bridge.cli.doctor",
    "archive": "bridge.cli.archive",
    "sync": "bridge.cli.sync",
    "sandbox": "bridge.cli.sandbox",
    "console": "bridge.cli.console",
    "ledger": "bridge.cli.ledger",
    "trace": "bridge.cli.trace",
}
"""Each command and the module whose ``register`` adds it, in the order ``--help`` lists
them: one line per command. A command's module is imported only when that command runs
(``--help`` without a command, or an unknown one, imports them all to list them)."""


def command_modules(names: Sequence[str] | None = None) -> list[ModuleType]:
    """The modules of ``names`` (every command when ``None``), imported."""
    return [import_module(COMMANDS[name]) for name in (names or COMMANDS)]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, when ``argv`` names a command first, of that one
    only (so running one command never imports the others)."""
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
    named = [argv[0]] if argv and argv[0] in COMMANDS else None
    for command in command_modules(named):
        command.register(commands, settings)
    return parser


EXIT_PIPE = 141
"""A reader that went away (``... | head``): the status a shell gives a process SIGPIPE ends."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mintsoft-bridge`` and ``python -m bridge``. Output piped into a
    reader that stops early (``archive find ... | head``) ends the command quietly with
    :data:`EXIT_PIPE`, for every command: no BrokenPipeError traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a pipe closed after the last print counts too
    except BrokenPipeError:
        # Python flushes stdout again at exit; aim it at /dev/null so that cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE
    return code


def _main(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
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
