"""``topology [--print | --definitions] [--config FILE]``: declare, list, or print as
RabbitMQ definitions, every exchange and queue."""

from __future__ import annotations

import argparse

from bridge.cli.common import TOPOLOGY_READS, Parser, add_command, run_async, settings_of

READS = TOPOLOGY_READS
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands, "topology", run, READS, help="declare every exchange and queue, idempotently"
    )
    shown = sub.add_mutually_exclusive_group()
    shown.add_argument("--print", action="store_true", help="list them, declare nothing")
    shown.add_argument(
        "--definitions",
        action="store_true",
        help="print them as RabbitMQ definitions JSON (for the management plugin), declare nothing",
    )
    sub.add_argument(
        "--config", metavar="FILE", help="also the queues of the subscribers in this file"
    )


def run(args: argparse.Namespace) -> int:
    from bridge.amqp.definitions import definitions_json
    from bridge.amqp.topology import archive_retention, declare_topology, deliveries_retention
    from bridge.worker.subscribers import full_topology

    settings = settings_of(args)
    topology = full_topology(
        settings.exchange, args.config, archive_retention(settings), deliveries_retention(settings)
    )
    if args.definitions:
        print(definitions_json(topology), end="")
        return 0
    print_only: bool = args.print
    if not print_only:
        run_async(declare_topology(settings.amqp_urls, topology))
    print("\n".join(topology.describe()))
    if not print_only:
        print(
            f"declared {len(topology.exchanges)} exchanges, {len(topology.queues)} queues, "
            f"{len(topology.bindings)} bindings"
        )
    return 0
