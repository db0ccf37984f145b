"""Command-line interface: argument parsing and one function per command, nothing else."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from bridge.core.contract import EVENTS
from bridge.core.settings import SPECS, Settings, SettingsError, flag_name, load_settings
from bridge.errors import CommandError

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument or setting: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit 2, never a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _settings_flags() -> _Parser:
    parent = _Parser(add_help=False)
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


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {variable: getattr(args, variable, None) for variable in SPECS}
    return load_settings(overrides=overrides)


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


# --- commands -------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the webhook receiver."""
    from bridge.core import logs
    from bridge.receiving.serve import serve

    settings = _settings(args)
    settings.require_auth_or_opt_out()
    logs.configure(settings.log_format)
    run_async(serve(settings))
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    """Declare (or, with --print, list; with --definitions, print as JSON) every exchange
    and queue."""
    from bridge.amqp.topology import topology_command

    return run_async(  # type: ignore[no-any-return]
        topology_command(_settings(args), args.config, args.print, args.definitions)
    )


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the subscribers a TOML file declares."""
    from bridge.core import logs
    from bridge.worker.runner import worker_command

    settings = _settings(args)
    logs.configure(settings.log_format)
    return run_async(worker_command(settings, args.config, args.metrics_port))  # type: ignore[no-any-return]


def cmd_dlq_list(args: argparse.Namespace) -> int:
    """Print what subscriber NAME dead-lettered."""
    from bridge.worker.dlq import list_command

    return run_async(list_command(_settings(args), args.name, args.limit))  # type: ignore[no-any-return]


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    """Move what subscriber NAME dead-lettered back to its queue."""
    from bridge.worker.dlq import replay_command

    return run_async(replay_command(_settings(args), args.name, args.limit))  # type: ignore[no-any-return]


def cmd_spool_status(args: argparse.Namespace) -> int:
    """Print the local spool's depth, bytes and oldest age."""
    from bridge.receiving.spool import status_command

    code: int = status_command(_settings(args), as_json=args.json)
    return code


def cmd_connect_actions(args: argparse.Namespace) -> int:
    """Register the bridge's webhook URLs on Mintsoft orders."""
    from bridge.mintsoft.client import connect_actions_command

    return run_async(connect_actions_command(_settings(args), args))  # type: ignore[no-any-return]


def cmd_simulate(args: argparse.Namespace) -> int:
    """Send a realistic Mintsoft webhook to a running bridge."""
    from bridge.mintsoft.simulate import simulate_command

    return run_async(simulate_command(_settings(args), args))  # type: ignore[no-any-return]


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check settings, broker, topology and the public URL."""
    from bridge.mintsoft.doctor import doctor_command

    return run_async(doctor_command(_settings(args), args))  # type: ignore[no-any-return]


# --- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    settings = _settings_flags()
    parser = _Parser(
        prog="mintsoft-bridge",
        description="Receive Mintsoft order webhooks into RabbitMQ and deliver them to "
        "internal services, losing none.",
        epilog="Settings come from BRIDGE_* environment variables (or <VARIABLE>_FILE); "
        "a flag of the same name wins. See README.md.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def add(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help: str,
        parents: Sequence[_Parser] = (settings,),
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=list(parents))
        sub.set_defaults(func=func)
        return sub

    add("serve", cmd_serve, "run the webhook receiver (POST /webhooks/<event>)")

    worker = add("worker", cmd_worker, "run the subscribers that a TOML file declares")
    worker.add_argument("--config", required=True, metavar="FILE", help="subscribers file")
    worker.add_argument(
        "--metrics-port",
        type=_port_or_zero,
        default=0,
        metavar="N",
        help="serve /metrics and /healthz on BRIDGE_HOST:N (default 0: off)",
    )

    topology = add("topology", cmd_topology, "declare every exchange and queue, idempotently")
    shown = topology.add_mutually_exclusive_group()
    shown.add_argument("--print", action="store_true", help="list them, declare nothing")
    shown.add_argument(
        "--definitions",
        action="store_true",
        help="print them as RabbitMQ definitions JSON (for the management plugin), declare nothing",
    )
    topology.add_argument(
        "--config", metavar="FILE", help="also the queues of the subscribers in this file"
    )

    dlq = commands.add_parser(
        "dlq",
        help="inspect or replay a subscriber's dead letters",
        description="inspect or replay a subscriber's dead letters",
    )
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", parser_class=_Parser)
    dlq_commands.required = True
    dlq_list = dlq_commands.add_parser(
        "list", help="print one line per dead-lettered message", parents=[settings]
    )
    dlq_list.set_defaults(func=cmd_dlq_list)
    dlq_replay = dlq_commands.add_parser(
        "replay", help="move dead letters back to the queue", parents=[settings]
    )
    dlq_replay.set_defaults(func=cmd_dlq_replay)
    for sub in (dlq_list, dlq_replay):
        sub.add_argument("name", metavar="NAME", help="the subscriber's name")
        sub.add_argument(
            "--limit", type=_positive_int, default=None, metavar="N", help="at most N messages"
        )

    spool = commands.add_parser("spool", help="the local spool", description="the local spool")
    spool_commands = spool.add_subparsers(
        dest="spool_command", metavar="ACTION", parser_class=_Parser
    )
    spool_commands.required = True
    status = spool_commands.add_parser(
        "status", help="depth, bytes and oldest age", parents=[settings]
    )
    status.set_defaults(func=cmd_spool_status)
    status.add_argument("--json", action="store_true", help="print JSON")

    connect = add(
        "connect-actions",
        cmd_connect_actions,
        "register the bridge's URLs on a Mintsoft order (PUT ConnectActions)",
    )
    connect.add_argument("order_ids", metavar="ORDER_ID", nargs="*", help="Mintsoft order id(s)")
    connect.add_argument("--source-order-id", metavar="S", help="SourceOrderId to send")
    connect.add_argument(
        "--events",
        default="despatched,cancelled,delivered,split",
        help="which webhooks to register (default: all four)",
    )
    connect.add_argument("--dry-run", action="store_true", help="print the JSON, send nothing")
    connect.add_argument(
        "--from-file",
        metavar="FILE",
        help="order ids, one per line, or a CSV of order id,source order id",
    )
    connect.add_argument(
        "--print-create-order",
        action="store_true",
        help="print the ConnectAction block for a create-order call",
    )

    simulate = add("simulate", cmd_simulate, "send a realistic Mintsoft webhook to a bridge")
    simulate.add_argument(
        "event", metavar="EVENT", choices=EVENTS, help="despatched, cancelled, delivered or split"
    )
    simulate.add_argument(
        "--url",
        help="the bridge's base URL (default: BRIDGE_PUBLIC_URL, "
        "else http://BRIDGE_HOST:BRIDGE_PORT)",
    )
    simulate.add_argument("--order-id", type=_positive_int, metavar="N", help="order id to use")
    simulate.add_argument(
        "--file", metavar="F", help="send this file's bytes as the body instead, unchanged"
    )
    simulate.add_argument(
        "--count", type=_positive_int, default=1, metavar="N", help="send N webhooks"
    )
    simulate.add_argument(
        "--rate", type=float, default=None, metavar="R", help="at most R per second"
    )

    doctor = add("doctor", cmd_doctor, "check settings, broker, topology and the public URL")
    doctor.add_argument(
        "--skip-simulate",
        action="store_true",
        help="do not send a test webhook (it reaches every subscriber of order.despatched)",
    )
    return parser


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _port_or_zero(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1 to 65535, or 0 for off")
    return value


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
