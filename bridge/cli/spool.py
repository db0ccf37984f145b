"""``spool status``: the local spool's depth, bytes and oldest age."""

from __future__ import annotations

import argparse

import orjson

from bridge.cli.common import Parser, settings_flags, settings_of

READS = (
    "BRIDGE_SPOOL_PATH",
    "BRIDGE_SPOOL_MAX_BYTES",
)
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    settings = settings_flags(READS)
    help = "the local spool"
    spool = commands.add_parser("spool", help=help, description=help)
    actions = spool.add_subparsers(dest="spool_command", metavar="ACTION", parser_class=Parser)
    actions.required = True
    status = actions.add_parser("status", help="depth, bytes and oldest age", parents=[settings])
    status.set_defaults(func=run_status)
    status.add_argument("--json", action="store_true", help="print JSON")


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
