"""What every command shares: the one-line-error parser, settings flags, argument types and
the event loop runner."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, NoReturn

from bridge.core.settings import SPECS, Settings, flag_name, load_settings

EXIT_USAGE = 2

TOPOLOGY_READS = (
    "BRIDGE_AMQP_URL",
    "BRIDGE_EXCHANGE",
    "BRIDGE_ARCHIVE",
    "BRIDGE_ARCHIVE_MAX_AGE",
    "BRIDGE_ARCHIVE_MAX_BYTES",
)
"""The settings of the exchange's topology (the archive's retention with it): what every
command that declares or reads it lists in its own ``READS``."""


def shown_default(variable: str) -> str:
    """What ``variable`` is when unset, as its value would be written (``none`` when it has
    none): from :class:`Settings` itself, so ``--help`` cannot drift from it."""
    value = _DEFAULTS[SPECS[variable].attr]
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or value == () or value == "":
        return "none"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Settings)}


class UsageError(Exception):
    """A bad argument or setting: printed as one line, exit status 2."""


_EXTRAS_OWNER = "_parser_of_unrecognized_arguments"


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit 2, never a usage dump,
    and it names the (sub)command whose ``--help`` lists the flags that would fit."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            # The innermost command finishes first: it is the one the words were meant for.
            vars(parsed).setdefault(_EXTRAS_OWNER, self)
        return parsed, extras

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        owner: Parser = vars(parsed).pop(_EXTRAS_OWNER, self)
        if extras:
            owner.error(f"unrecognized arguments: {' '.join(extras)}{owner._did_you_mean(extras)}")
        return parsed

    def _did_you_mean(self, extras: list[str]) -> str:
        """``--port`` given to ``console``: its flag is ``--console-port``."""
        flags = {o for a in self._actions for o in a.option_strings if o.startswith("--")}
        for word in extras:
            name = word.split("=", 1)[0]
            if name.startswith("--"):
                near = sorted((f for f in flags if f.endswith("-" + name[2:])), key=len)
                if near:
                    return f"; did you mean {near[0]}?"
        return ""


class _RefuseSecret(argparse.Action):
    """A secret setting given as a flag: refused, since every local user can read the
    command line in ``ps``. One line naming the environment variable and its ``_FILE`` form."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        variable = self.dest.removeprefix(_SECRET_DEST)
        parser.exit(
            EXIT_USAGE,
            f"{parser.prog}: {option_string} is refused: a secret on the command line is "
            f"visible to every local user (ps); set {variable} or {variable}_FILE=/path/to/file "
            "instead\n",
        )


_SECRET_DEST = "refused_secret_"


def settings_flags(names: Iterable[str] | None = None) -> Parser:
    """A parent parser with one flag per non-secret setting in ``names`` (all of them when
    ``None``): ``--port`` for ``BRIDGE_PORT``. Secret settings get no flag; passing one
    anyway is refused in one line naming the variable to set instead (exit 2).

    A name this build does not define is skipped, so a command can list a setting of the
    contract before the part that adds it has landed (tests/test_cli_help.py checks every
    listed name against the contract's settings, so a typo still fails)."""
    wanted = list(SPECS) if names is None else [name for name in names if name in SPECS]
    parent = Parser(add_help=False)
    secrets = [name for name in wanted if SPECS[name].secret]
    group = parent.add_argument_group(
        "settings this command reads (each also from its environment variable)",
        f"Secrets only from the environment or <VARIABLE>_FILE, never a flag: {', '.join(secrets)}."
        if secrets
        else None,
    )
    for variable in wanted:
        spec = SPECS[variable]
        if spec.secret:
            continue
        long = "--" + variable.lower().replace("_", "-")
        group.add_argument(
            flag_name(variable),
            long,
            dest=variable,
            metavar="VALUE",
            default=None,
            help=f"{spec.help} [{variable}; default: {shown_default(variable)}]",
        )
    for variable, spec in SPECS.items():
        if spec.secret:
            parent.add_argument(
                flag_name(variable),
                "--" + variable.lower().replace("_", "-"),
                dest=_SECRET_DEST + variable,
                nargs="?",
                action=_RefuseSecret,
                help=argparse.SUPPRESS,
            )
    return parent


Run = Callable[[argparse.Namespace], int]
"""What a command runs: its ``run`` (which imports what it needs, so ``--help`` stays fast)."""


def add_command(
    commands: argparse._SubParsersAction[Parser],
    name: str,
    run: Run,
    reads: Iterable[str] | None,
    *,
    help: str,
    description: str | None = None,
) -> Parser:
    """The (sub)command ``name``, running ``run``: ``help`` in its parent's list and atop
    its own ``--help`` (unless a longer ``description`` is given), with the flags of the
    settings it ``reads`` (:func:`settings_flags`)."""
    sub = commands.add_parser(
        name, help=help, description=description or help, parents=[settings_flags(reads)]
    )
    sub.set_defaults(func=run)
    return sub


def add_actions(
    commands: argparse._SubParsersAction[Parser], name: str, *, help: str
) -> argparse._SubParsersAction[Parser]:
    """A command of actions (``dlq list``, ``dlq replay``): each is added to what this
    returns with :func:`add_command`; one is required."""
    command = commands.add_parser(name, help=help, description=help)
    actions = command.add_subparsers(dest=f"{name}_command", metavar="ACTION", parser_class=Parser)
    actions.required = True
    return actions


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings: environment, ``_FILE`` forms, and the flags given on this command line."""
    overrides = {
        variable: getattr(args, variable, None)
        for variable, spec in SPECS.items()
        if not spec.secret
    }
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


def cli_operator() -> str | None:
    """Who runs this command, for its delivery and audit records: the OS user's name
    (``None`` when the user has none, as under an arbitrary container uid)."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None
