"""What every command shares: the one-line-error parser, settings flags, argument types and
the event loop runner."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn

from bridge.core.settings import SPECS, Settings, flag_name, load_settings

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument or setting: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit 2, never a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def settings_flags() -> Parser:
    """A parent parser with one flag per setting (``--port`` for ``BRIDGE_PORT``)."""
    parent = Parser(add_help=False)
    group = parent.add_argument_group("settings (each also read from its environment variable)")
    for variable, spec in SPECS.items():
        long = "--" + variable.lower().replace("_", "-")
        group.add_argument(
            flag_name(variable),
            long,
            dest=variable,
            metavar="VALUE",
            default=None,
            help=f"{spec.help} [{variable}]",
        )
    return parent


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings: environment, ``_FILE`` forms, and the flags given on this command line."""
    overrides = {variable: getattr(args, variable, None) for variable in SPECS}
    return load_settings(overrides=overrides)


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value
