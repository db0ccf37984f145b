"""``spool status``: the local spool's depth, bytes and oldest age. ``spool drain [--path
FILE]``: publish everything a spool file holds, then exit (1, naming how many remain, if
it could not)."""

from __future__ import annotations

import argparse
import logging

import orjson

from bridge.cli.common import Parser, add_actions, add_command, run_async, settings_of

READS = (
    "BRIDGE_SPOOL_PATH",
    "BRIDGE_SPOOL_MAX_BYTES",
)
"""The settings ``spool status`` reads: its --help offers their flags (secrets excepted)."""
DRAIN_READS = (
    "BRIDGE_AMQP_URL",
    "BRIDGE_EXCHANGE",
    "BRIDGE_SPOOL_PATH",
    "BRIDGE_PUBLISH_TIMEOUT",
    "BRIDGE_LOG_FORMAT",
)
"""The settings ``spool drain`` reads."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    actions = add_actions(commands, "spool", help="the local spool")
    status = add_command(actions, "status", run_status, READS, help="depth, bytes and oldest age")
    status.add_argument("--json", action="store_true", help="print JSON")
    help = "publish everything a spool file holds (in order, each confirmed), then exit"
    drain = add_command(actions, "drain", run_drain, DRAIN_READS, help=help)
    drain.add_argument(
        "--path",
        metavar="FILE",
        default=None,
        help="the spool file, e.g. one a removed receiver left on its volume "
        "(default: BRIDGE_SPOOL_PATH); not one a running serve uses",
    )


def run_status(args: argparse.Namespace) -> int:
    from bridge.receiving.spool import read_status

    settings = settings_of(args)
    path = settings.spool_path
    if not path:
        if args.json:
            print(orjson.dumps({"enabled": False}).decode())
        else:
            print("the spool is disabled (BRIDGE_SPOOL_PATH is empty)")
        return 0
    status = read_status(path)
    if args.json:
        print(
            orjson.dumps(
                {
                    "enabled": True,
                    "path": path,
                    "depth": status.depth,
                    "bytes": status.bytes,
                    "max_bytes": settings.spool_max_bytes,
                    "oldest_age_seconds": round(status.oldest_age_seconds, 3),
                }
            ).decode()
        )
    else:
        print(f"spool:      {path}")
        print(f"depth:      {status.depth} messages")
        print(f"bytes:      {status.bytes} of {settings.spool_max_bytes}")
        print(f"oldest age: {status.oldest_age_seconds:.1f} s")
    return 0


def run_drain(args: argparse.Namespace) -> int:
    from bridge.cli.progress import Progress
    from bridge.core import logs
    from bridge.core.settings import SettingsError
    from bridge.receiving.drain_file import drain_spool_file
    from bridge.receiving.spool import read_status

    settings = settings_of(args)
    path = args.path or settings.spool_path
    if not path:
        raise SettingsError("BRIDGE_SPOOL_PATH is empty: give the spool file with --path FILE")
    logs.configure(settings.log_format, logging.WARNING)
    named = "--path" if args.path else "BRIDGE_SPOOL_PATH"
    progress = Progress(read_status(path, named).depth, "publishing")

    def advance(count: int) -> None:
        for _ in range(count):
            progress.advance(True)

    try:
        published = run_async(drain_spool_file(settings, path, advance))
    finally:
        progress.close()
    print(f"published {published} webhook{'' if published == 1 else 's'} from {path}; it is empty")
    return 0
